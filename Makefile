# One command per habit: `make demo`, `make test`, `make lint`, `make bench`.
PY ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# cpu or gpu: which ONNX Runtime (and TensorFlow CUDA libraries) to install; exactly one.
RUNTIME ?= cpu
RUN_STAMP := $(VENV)/.installed-$(RUNTIME)
DEV_STAMP := $(VENV)/.installed-$(RUNTIME)-dev
PYTEST_ARGS ?=
# Test processes: most integration tests wait on subprocesses (workers, MLflow, agents), so two
# overlap well on 2 cores. A module stays on one process (--dist loadfile): its fixtures are built once.
TEST_WORKERS ?= 2

.PHONY: install install-dev demo demo-drift demo-edge test test-fast lint docs format services bench bench-export bench-read bench-duplicates bench-serve bench-drift bench-fleet clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The demo needs the runtime only; tests, linters and benchmarks add the dev extra.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[platform,$(subst -,$(comma),$*)]'
	touch $@

comma := ,

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

demo: install
	$(BIN)/modelyard demo

# The monitoring loop: drift, retraining, the gate, the guard's rollback.
demo-drift: install
	$(BIN)/modelyard demo drift

# The edge fleet: five local agents, canary rollouts, a halted bad bundle, rollback.
demo-edge: install
	$(BIN)/modelyard demo edge

services:
	bash scripts/services.sh

test: install-dev services
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

# The inner loop: no subprocess services, nothing slow; under 3 minutes on 2 cores.
test-fast: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not integration and not slow" --durations=10 $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy modelyard
	$(BIN)/lint-imports
	$(BIN)/python scripts/import_cycles.py

# The documentation site, built into site/ (ignored by git); --strict: a broken link, a missing page or a
# setting without a description fails the build. The references are generated from the code (docs/gen/).
docs: install-dev
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet --site-dir site

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev
	$(BIN)/python bench/train_overhead.py

bench-export: install-dev
	$(BIN)/python bench/export_latency.py

bench-read: install-dev
	$(BIN)/python bench/read_commands.py

bench-duplicates: install-dev
	$(BIN)/python bench/duplicate_delivery.py

bench-drift: install-dev
	$(BIN)/python bench/drift_check.py
	$(BIN)/python bench/drift_calibration.py
	$(BIN)/python bench/inference_window.py

bench-fleet: install-dev
	$(BIN)/python bench/fleet.py

bench-serve: install-dev
	$(BIN)/python bench/serve_throughput.py

# Every bench/*.py at its smoke size (--smoke: the same code path, tiny, seconds to a minute each), one
# after another; the first that fails stops the run. CI runs it (.ci/run): a broken benchmark fails CI.
.PHONY: bench-smoke
bench-smoke: install-dev
	@set -e; total=$$(date +%s); for script in bench/*.py; do \
	  echo "== $$script --smoke"; start=$$(date +%s); \
	  $(BIN)/python $$script --smoke; \
	  echo "== $$script --smoke: ok in $$(( $$(date +%s) - start )) s"; \
	done; echo "== bench-smoke: every script passed in $$(( $$(date +%s) - total )) s"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
