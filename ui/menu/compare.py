"""``autotrain-menu --compare RUN_A RUN_B``: two runs of a home side by side, read from their files.

It shows what differs in their configuration, each round's held-out eval (base, adapter, delta and the
adapter's interval), the best round, the teacher cost and the duration, in a table or as JSON. Only
files are read (``state.json``, ``config.json``), so it works on finished runs with no supervisor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.journal import CONFIG_FILE, load_state_file
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import EvalSample, RunState
from heidi_engine.bus.summary import run_summary
from heidi_engine.ui.eval_text import DASH, diff, interval, num, scores_of, signed
from heidi_engine.ui.status_view import duration_text as run_duration  # --list's duration format (4m17s)

__all__ = ["CompareError", "compare_runs", "format_compare"]


class CompareError(Exception):
    """A run to compare is not a run id, or this home has no such run; the message says which."""


def _load(home: Path, run_id: str) -> tuple[RunState, dict[str, Any]]:
    if not is_run_id(run_id):
        raise CompareError(f"{run_id!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)")
    folder = home / "runs" / run_id
    state = load_state_file(folder) if folder.is_dir() else None
    if state is None:
        raise CompareError(f"no run {run_id} in {home / 'runs'} (or its state.json is unreadable)")
    config = dict(state.config)
    if not config:
        try:
            saved = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            config = saved if isinstance(saved, dict) else {}
        except (OSError, ValueError):
            config = {}
    return state, config


def _round(sample: EvalSample | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    base, adapter = scores_of(sample)
    return {
        "base": base.model_dump(mode="json"),
        "adapter": adapter.model_dump(mode="json"),
        "delta": {
            "val_loss": diff(adapter.val_loss, base.val_loss),
            "val_pass_at_1": diff(adapter.val_pass_at_1, base.val_pass_at_1),
            "humaneval_pass_at_1": diff(adapter.humaneval_pass_at_1, base.humaneval_pass_at_1),
        },
    }


def compare_runs(home: Path, run_a: str, run_b: str) -> dict[str, Any]:
    """The comparison of two runs of ``home``: config differences, per-round eval, cost and duration."""
    (state_a, config_a), (state_b, config_b) = _load(home, run_a), _load(home, run_b)
    keys = sorted(set(config_a) | set(config_b))
    differences = {
        key: [config_a.get(key), config_b.get(key)] for key in keys if config_a.get(key) != config_b.get(key)
    }
    by_round_a = {e.round: e for e in state_a.evals}
    by_round_b = {e.round: e for e in state_b.evals}
    rounds = [
        {"round": n, run_a: _round(by_round_a.get(n)), run_b: _round(by_round_b.get(n))}
        for n in sorted(set(by_round_a) | set(by_round_b))
    ]
    return {
        "runs": [run_summary(run_a, state_a), run_summary(run_b, state_b)],
        "config_differences": differences,
        "rounds": rounds,
    }


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return DASH
    base, adapter = entry["base"], entry["adapter"]
    ci = adapter.get("val_ci")
    return (
        f"loss {num(base['val_loss'], 3)}→{num(adapter['val_loss'], 3)} "
        f"pass@1 {num(base['val_pass_at_1'], 2)}→{num(adapter['val_pass_at_1'], 2)} "
        f"({signed(entry['delta']['val_pass_at_1'], 2)}, {interval(tuple(ci) if ci else None, adapter['n_val'])})"
    )


def _value(value: object) -> str:
    return clean(json.dumps(value) if not isinstance(value, str) else value, 60)


def format_compare(result: dict[str, Any]) -> str:
    """The comparison as aligned text: summary, config differences, then eval round by round.

    Every label and value is shown whole (a field name is never cut), each column as wide as its
    widest cell, and the duration in ``--list``'s format (``4m17s``)."""
    run_a, run_b = (run["run_id"] for run in result["runs"])
    summary_a, summary_b = result["runs"]
    costs = [s.get("estimated_cost_usd") for s in result["runs"]]
    rows: list[tuple[str, str, str] | str] = [
        ("", run_a, run_b),
        ("status", str(summary_a.get("status", DASH)), str(summary_b.get("status", DASH))),
        ("rounds done", str(summary_a.get("rounds_done", DASH)), str(summary_b.get("rounds_done", DASH))),
        ("duration", run_duration(summary_a.get("duration_s")), run_duration(summary_b.get("duration_s"))),
        ("cost", *("unknown" if c is None else f"${c:.4f}" for c in costs)),  # type: ignore[list-item]
        ("best round", str(summary_a.get("best_round") or DASH), str(summary_b.get("best_round") or DASH)),
        ("best pass@1", num(summary_a.get("best_pass_at_1"), 2), num(summary_b.get("best_pass_at_1"), 2)),
        ("best val loss", num(summary_a.get("best_val_loss"), 4), num(summary_b.get("best_val_loss"), 4)),
        "config differences:" if result["config_differences"] else "config: the same",
    ]
    rows += [(f"  {key}", _value(a), _value(b)) for key, (a, b) in result["config_differences"].items()]
    rows.append(
        "eval (base→adapter on each run's held-out set):" if result["rounds"] else "eval: no round evaluated"
    )
    rows += [(f"  round {e['round']}", _cell(e[run_a]), _cell(e[run_b])) for e in result["rounds"]]
    cells = [row for row in rows if isinstance(row, tuple)]
    label_width = max(len(clean(label, 200)) for label, _a, _b in cells)
    width = max(len(clean(a, 200)) for _label, a, _b in cells)
    return "\n".join(
        row if isinstance(row, str)
        else f"{clean(row[0], 200):<{label_width}}  {clean(row[1], 200):<{width}}  {clean(row[2], 200)}".rstrip()
        for row in rows
    )  # fmt: skip
