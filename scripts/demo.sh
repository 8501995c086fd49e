#!/usr/bin/env bash
# The offline quickstart (README's main command, `make demo`): set up once, start the supervisor, run one
# real round with the shipped config.yaml (local SmolLM2 teacher and student, CPU, no key, no network),
# follow it to the end, then say where the adapter, the eval report and the event log are.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install
export AUTOTRAIN_HOME="${AUTOTRAIN_HOME:-$PWD}"
BIN="$PWD/.venv/bin"

started_here=0
if ! "$BIN/autotrain-menu" --status >/dev/null 2>&1; then started_here=1; fi
t0=$(date +%s)
set +e
"$BIN/autotrain-menu" --start --rounds 1 --wait
rc=$?
set -e
elapsed=$(( $(date +%s) - t0 ))
run_id=$("$BIN/autotrain-menu" --list --json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["run_id"])')
if [ "$started_here" = 1 ]; then "$BIN/autotrain-menu" --shutdown >/dev/null || true; fi

run_dir="$AUTOTRAIN_HOME/runs/$run_id"
echo
echo "run $run_id finished in ${elapsed}s (exit $rc)"
echo "  adapter      $run_dir/out_lora_round_1/"
echo "  eval report  $run_dir/eval/report_round_1.json"
echo "  event log    $run_dir/events.jsonl"
echo "  dashboard    $BIN/autotrain-dash --run $run_id"
exit "$rc"
