#!/usr/bin/env bash
# Run a command with CPU-burning processes beside it, as on a busy CI machine, optionally several times
# in a row (stopping at the first failure). Timing bugs that a quiet machine hides show up here.
#
#   scripts/stress.sh [-b BURNERS] [-r REPEATS] -- COMMAND...
#   scripts/stress.sh -r 20 -- .venv/bin/python -m pytest -q tests/integration/test_publisher_batches.py
#
# BURNERS defaults to 2, REPEATS to 1. The burners end with the script, however it ends.
set -euo pipefail
burners=2
repeats=1
while [ $# -gt 0 ]; do
    case "$1" in
        -b) burners="$2"; shift 2 ;;
        -r) repeats="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [-b BURNERS] [-r REPEATS] -- COMMAND..." >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [-b BURNERS] [-r REPEATS] -- COMMAND..." >&2; exit 2; }

pids=()
stop_burners() { [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap stop_burners EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq 1 "$burners"); do
    python3 -c 'while True: pass' &
    pids+=($!)
done

for i in $(seq 1 "$repeats"); do
    started=$(date +%s)
    if "$@"; then
        echo "stress: run $i/$repeats passed in $(( $(date +%s) - started )) s with $burners burners"
    else
        code=$?
        echo "stress: run $i/$repeats FAILED (exit $code) after $(( $(date +%s) - started )) s with $burners burners"
        exit "$code"
    fi
done
