#!/usr/bin/env bash
# Run `modelyard demo` N times in a row (default 5) in one fresh home, as a user would:
# every run must exit 0 and end with v2 serving. The demo is the first thing anyone runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
home=$(mktemp -d -t modelyard-demo-XXXX)
trap 'rm -rf "$home"' EXIT
for i in $(seq 1 "$runs"); do
  started=$(date +%s)
  if ! out=$(MODELYARD_HOME="$home" COLUMNS=200 .venv/bin/modelyard demo 2>&1); then
    echo "$out" | tail -n 40
    echo "demo run $i of $runs FAILED"
    exit 1
  fi
  aliases=$(echo "$out" | grep '^aliases now:')
  echo "demo run $i of $runs: ok in $(( $(date +%s) - started )) s; $aliases"
  [[ "$aliases" == *"champion = v2"* ]] || { echo "demo run $i ended with the wrong champion"; exit 1; }
done
echo "$runs of $runs demo runs passed"
