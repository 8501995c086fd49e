"""The demo's closing lines (``scripts/demo.sh``): where a run's files are, whether the supervisor is
still running (asked, not assumed), and last the outcome as a verdict in words with its interval.

    demo_report.py HOME RUN_ID ELAPSED_S EXIT_CODE

Every line says what is true when it is printed: the supervisor line pings the home's supervisor, and
the outcome comes from the run's last eval report (``eval/report_round_N.json``) through
:func:`heidi_engine.ui.eval_text.verdict`, the words the menu's status uses too.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from heidi_engine.bus.state import EvalScores
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.eval_text import num, paired_words, verdict
from heidi_engine.ui.text import fmt_duration

_REPORT = re.compile(r"report_round_(\d+)\.json")


def _last_report(run_dir: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in (run_dir / "eval").glob("report_round_*.json")
             if (m := _REPORT.fullmatch(p.name))]  # fmt: skip
    return max(found)[1] if found else None


def _outcome(run_dir: Path) -> str:
    report_path = _last_report(run_dir)
    if report_path is None:
        return "no eval report (the run did not reach eval)"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        base = EvalScores.model_validate(report.get("base") or {})
        adapter = EvalScores.model_validate(report.get("adapter") or {})
    except (OSError, ValueError, AttributeError):
        return f"the eval report {report_path} cannot be read"
    words = f"base → adapter: {verdict(base, adapter)}"
    if base.val_pass_at_1 is not None and adapter.val_loss is not None:
        words += f"; val loss {num(base.val_loss, 3)} → {num(adapter.val_loss, 3)}"
    if adapter.humaneval_paired is not None:
        words += f"; HumanEval: {paired_words(adapter.humaneval_paired, 'problem')}"
    elif adapter.humaneval_pass_at_1 is not None:
        words += f"; HumanEval pass@1 {num(base.humaneval_pass_at_1, 2)} → {num(adapter.humaneval_pass_at_1, 2)}"
    return words


def _supervisor(home: Path) -> str:
    try:
        info = find_supervisor(home, timeout_s=2.0)
    except NoSupervisor:
        return "not running (autotrain-menu --start starts one with a run)"
    return (
        f"pid {info.pid} keeps running on {home}: autotrain-menu --status and autotrain-dash watch it, "
        "autotrain-menu --shutdown stops it"
    )


def report(home: Path, run_id: str, elapsed_s: float, exit_code: int) -> list[str]:
    """The closing lines, the outcome last."""
    run_dir = home / "runs" / run_id
    report_path = _last_report(run_dir)
    ended = "completed" if exit_code == 0 else f"ended early (exit {exit_code}; autotrain-menu --status says why)"
    return [
        "",
        f"run {run_id} {ended} in {fmt_duration(elapsed_s)}",
        f"  adapter      {run_dir / 'out_lora_round_1'}/",
        f"  eval report  {report_path or run_dir / 'eval'} (answers: eval/samples_round_N.jsonl)",
        f"  event log    {run_dir / 'events.jsonl'}",
        f"  dashboard    {Path(sys.executable).parent / 'autotrain-dash'} --run {run_id} --view 6",
        f"  supervisor   {_supervisor(home)}",
        f"result       {_outcome(run_dir)}",
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: demo_report.py HOME RUN_ID ELAPSED_S EXIT_CODE", file=sys.stderr)
        return 2
    home, run_id, elapsed, code = Path(argv[0]), argv[1], float(argv[2]), int(argv[3])
    print("\n".join(report(home, run_id, elapsed, code)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
