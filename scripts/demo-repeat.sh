#!/usr/bin/env bash
# Run `modelyard demo [SCENARIO]` N times in a row (default 5) in one fresh home, as a user would:
# every run must exit 0 and end with v2 serving. The demo is the first thing anyone runs.
#   scripts/demo-repeat.sh 5          the lifecycle demo
#   scripts/demo-repeat.sh 3 drift    the drift demo (it also prints how long drift took to a new champion)
#   scripts/demo-repeat.sh 3 edge     the edge demo (the whole fleet must end on v1, the bad bundle halted)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
scenario=${2:-lifecycle}
home=$(mktemp -d -t modelyard-demo-XXXX)
trap 'rm -rf "$home"' EXIT
for i in $(seq 1 "$runs"); do
  started=$(date +%s)
  if ! out=$(MODELYARD_HOME="$home" COLUMNS=200 .venv/bin/modelyard demo "$scenario" 2>&1); then
    echo "$out" | tail -n 40
    echo "demo run $i of $runs FAILED"
    exit 1
  fi
  if [[ "$scenario" == drift ]]; then
    champion=$(echo "$out" | grep '^champion now:')
    echo "demo run $i of $runs: ok in $(( $(date +%s) - started )) s; $champion; $(echo "$out" | grep '^first drifted batch')"
    [[ "$champion" == *"champion now: v2;"* ]] || { echo "demo run $i ended with the wrong champion"; exit 1; }
    echo "$out" | grep -q 'guard_rolled_back\|guard: v3 rolled back\|gate on v3: rejected' || { echo "demo run $i: the poisoned v3 was not stopped"; exit 1; }
  elif [[ "$scenario" == edge ]]; then
    fleet=$(echo "$out" | grep '^fleet now runs:')
    echo "demo run $i of $runs: ok in $(( $(date +%s) - started )) s; $fleet"
    [[ "$fleet" == "fleet now runs: edge-demo"*"/1;"* && "$fleet" != *,* ]] || { echo "demo run $i: the fleet did not end on v1"; exit 1; }
    echo "$out" | grep -q '^  halted .*canary devices failed' || { echo "demo run $i: the bad bundle did not halt at the canary"; exit 1; }
  else
    aliases=$(echo "$out" | grep '^aliases now:')
    echo "demo run $i of $runs: ok in $(( $(date +%s) - started )) s; $aliases"
    [[ "$aliases" == *"champion = v2"* ]] || { echo "demo run $i ended with the wrong champion"; exit 1; }
  fi
done
echo "$runs of $runs demo runs passed"
