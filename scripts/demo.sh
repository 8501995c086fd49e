#!/usr/bin/env bash
# The offline quickstart (README's main command, `make demo`): set up once, start the supervisor, run one
# real round with the shipped config.yaml (local SmolLM2 teacher and student, CPU, no key, no network),
# follow it to the end, say where the adapter, the eval report and the event log are, and end with the
# base -> adapter result on the held-out tasks.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install
export AUTOTRAIN_HOME="${AUTOTRAIN_HOME:-$PWD}"
BIN="$PWD/.venv/bin"
# Once per machine: the packaged model's dense copy (dequantizing its GGUF file takes about 20 s; every
# later load, in every stage of every run, reads the copy). Part of setting up, like the install above.
TQDM_DISABLE=1 "$BIN/python" -m heidi_engine.agents.student smollm2-135m-instruct

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
echo "  eval report  $run_dir/eval/report_round_1.json (answers: eval/samples_round_1.jsonl)"
echo "  event log    $run_dir/events.jsonl"
echo "  dashboard    $BIN/autotrain-dash --run $run_id --view 6"
# The last line is the outcome: base -> adapter on the run's held-out tasks.
"$BIN/python" - "$run_dir/eval/report_round_1.json" <<'PY' || true
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(print("result       no eval report (the run did not reach eval)"))
base, adapter = report.get("base") or {}, report.get("adapter") or {}
def num(scores, key, digits):
    value = scores.get(key)
    return "-" if value is None else f"{value:.{digits}f}"
parts = [f"held-out val loss {num(base, 'val_loss', 3)} -> {num(adapter, 'val_loss', 3)}"]
if adapter.get("val_pass_at_1") is not None:
    low, high = adapter.get("val_ci") or (0.0, 1.0)
    parts.append(f"held-out pass@1 {num(base, 'val_pass_at_1', 2)} -> {num(adapter, 'val_pass_at_1', 2)} "
                 f"(95% CI {low:.2f}-{high:.2f}, n={adapter.get('n_val')})")
if adapter.get("humaneval_pass_at_1") is not None:
    parts.append(f"HumanEval pass@1 {num(base, 'humaneval_pass_at_1', 2)} -> {num(adapter, 'humaneval_pass_at_1', 2)}")
print("result       base -> adapter: " + "; ".join(parts))
PY
exit "$rc"
