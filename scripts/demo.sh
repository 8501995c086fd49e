#!/usr/bin/env bash
# The offline quickstart (README's main command, `make demo`): set up once, start the supervisor, run one
# real round with the shipped config.yaml (local SmolLM2 teacher and student, CPU, no key, no network),
# follow it to the end, say where the adapter, the eval report and the event log are and that the supervisor
# keeps running, and end with the base -> adapter verdict on the held-out tasks (scripts/demo_report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install
export AUTOTRAIN_HOME="${AUTOTRAIN_HOME:-$PWD}"
BIN="$PWD/.venv/bin"
# Once per machine: the packaged model's dense copy (dequantizing its GGUF file takes about 20 s; every
# later load, in every stage of every run, reads the copy). Part of setting up, like the install above.
TQDM_DISABLE=1 "$BIN/python" -m heidi_engine.agents.student smollm2-135m-instruct

t0=$(date +%s)
set +e
"$BIN/autotrain-menu" --start --rounds 1 --wait
rc=$?
set -e
elapsed=$(( $(date +%s) - t0 ))
run_id=$("$BIN/autotrain-menu" --list --json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)[0]["run_id"])')
# The supervisor stays, as `--wait` just said: `autotrain-dash` shows the finished run live and
# `autotrain-menu --shutdown` stops it. The closing lines ask whether it still runs rather than assume it;
# the last one is the outcome in words (better, worse or no measurable change) with its interval.
"$BIN/python" scripts/demo_report.py "$AUTOTRAIN_HOME" "$run_id" "$elapsed" "$rc"
exit "$rc"
