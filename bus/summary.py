"""One run in a line: what ``list_runs`` answers and ``--list`` shows, from a run's state alone.

The supervisor (answering ``list_runs``) and the menu (reading ``state.json`` files when no supervisor
runs) both call :func:`run_summary`, so the two never disagree. The outcome comes from the eval stage's
per-round summaries in the state: the best round and its adapter's held-out pass@1 and val loss.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from heidi_engine.bus.ledger import LedgerLost, stored_state
from heidi_engine.bus.state import EvalSample, RunState

__all__ = ["best_eval", "duration_s", "folder_summary", "run_summary"]


def _when(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration_s(state: RunState) -> float | None:
    """Seconds from the run's start to its last update, or None when either is unknown."""
    start, end = _when(state.started_at), _when(state.updated_at)
    if start is None or end is None:
        return None
    return max(0.0, round((end - start).total_seconds(), 1))


def best_eval(state: RunState) -> EvalSample | None:
    """The eval summary of the run's best round, or None when no round is best yet."""
    return next((e for e in state.evals if e.round == state.best_round), None)


def run_summary(run_id: str, state: RunState | None) -> dict[str, Any]:
    """What ``list_runs`` shows of one run (``status`` "unknown" when its state cannot be read)."""
    if state is None:
        return {"run_id": run_id, "status": "unknown", "rounds": None, "counters": {}}
    best = best_eval(state)
    adapter = best.adapter if best is not None else None
    return {
        "run_id": run_id,
        "status": state.status,
        "current_round": state.current_round,
        "total_rounds": state.total_rounds,
        "rounds_done": len(state.evals),
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "duration_s": duration_s(state),
        "counters": state.counters,
        "estimated_cost_usd": state.usage.get("estimated_cost_usd"),
        "best_round": state.best_round,
        "best_pass_at_1": adapter.val_pass_at_1 if adapter is not None else None,
        "best_val_loss": adapter.val_loss if adapter is not None else None,
    }


def folder_summary(folder: Path) -> dict[str, Any]:
    """:func:`run_summary` of a run folder: from its ``state.json``, or its ledger where that cannot be
    read; "unknown" with the reason (``problem``) when neither can tell the run's totals."""
    try:
        return run_summary(folder.name, stored_state(folder))
    except LedgerLost as exc:
        return {**run_summary(folder.name, None), "problem": str(exc)}
