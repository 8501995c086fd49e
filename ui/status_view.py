"""What the HTTP status server shows of a :class:`~heidi_engine.ui.viewer.View`: pure functions, no I/O.

``status_fields`` is the allow-list of the HTTP API (exactly those keys, redacted again at this output
edge), ``assess`` turns the subscriber's liveness into ``ok`` / ``degraded`` / ``down``, and
``format_status`` and ``format_runs`` are the menu's human-readable forms of the ``status`` and
``list_runs`` answers (``/metrics`` is :mod:`heidi_engine.ui.http.metrics`). Keeping
them apart from the server and the menu makes the field set, the health rules and the wording testable
without sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.outage import TeacherOutage, health_reason
from heidi_engine.bus.redaction import clean, default_redactor
from heidi_engine.bus.state import ACTIVE_STATUSES, RESUMABLE_STATUSES, EvalSample, RunState
from heidi_engine.ui.eval_text import eval_line, scores_of, verdict
from heidi_engine.ui.text import fmt_duration, outage_text
from heidi_engine.ui.viewer import View

__all__ = [
    "ALLOWED_FIELDS",
    "Health",
    "assess",
    "format_runs",
    "format_status",
    "orphaned",
    "orphaned_summary",
    "resume_hint",
    "round_cost",
    "status_fields",
]

ALLOWED_FIELDS: tuple[str, ...] = (
    "run_id", "status", "current_round", "current_stage", "stop_requested", "pause_requested",
    "counters", "usage", "gpu_summary", "last_event_ts", "health", "updated_at",
)  # fmt: skip
COST_DIGITS = 6


@dataclass(frozen=True)
class Health:
    """The server's verdict on the supervisor; ``reason`` is set unless ``state`` is ``ok``."""

    state: Literal["ok", "degraded", "down"]
    reason: str | None = None

    @property
    def http_status(self) -> int:
        """200 when ok, 503 otherwise (what load balancers and probes expect)."""
        return 200 if self.state == "ok" else 503

    def body(self) -> dict[str, str]:
        """The ``GET /health`` document."""
        if self.reason is None:
            return {"health": self.state}
        return {"health": self.state, "reason": clean(self.reason, 300)}

    def summary(self) -> str:
        """``/status``'s ``health``: ``ok``, or the verdict with its reason (``degraded: teacher unreachable
        since ...``)."""
        return self.state if self.reason is None else f"{self.state}: {clean(self.reason, 300)}"


def assess(view: View, absent_reason: str | None) -> Health:
    """Health from the live view and a look at the connection file.

    ``absent_reason`` is why no supervisor process exists (no connection file, or its pid is gone), or
    ``None`` when one does. No process: down. Heard from within the last 3 s: ok, unless the supervisor
    itself reports a problem (a full disk) or the generate stage is parked on an unreachable teacher:
    degraded with that reason. A process that is silent (or not yet heard by this viewer): degraded, since
    it may be busy, hung or just starting.
    """
    if absent_reason is not None:
        return Health("down", absent_reason)
    if view.connected:
        reason = health_reason(view.state.problem, view.state.teacher_outage)
        return Health("degraded", reason) if reason else Health("ok")
    if view.silence_s is None:
        return Health("degraded", "connecting to the supervisor: not heard from yet")
    return Health("degraded", f"supervisor silent for {view.silence_s:.1f} s")


def orphaned(state: RunState) -> RunState:
    """``state`` as it stands once its supervisor is known to be dead (its pid gone): a run it left
    active is ``interrupted``, with no agent running and nothing pending, which is what the next
    supervisor records at its start; any other state is returned as it is. Every viewer shows a dead
    supervisor's run through this, so none keeps calling it running."""
    if state.status not in ACTIVE_STATUSES:
        return state
    return state.model_copy(update={
        "status": "interrupted", "agents": {}, "stop_requested": False, "pause_requested": False,
        "teacher_outage": None,
    })


def orphaned_summary(run: dict[str, Any]) -> dict[str, Any]:
    """:func:`orphaned` for a ``status`` answer or a ``list_runs`` entry read from the files while no
    supervisor runs: an active status reads ``interrupted`` (so :func:`resume_hint` gives the hint)."""
    return {**run, "status": "interrupted"} if run.get("status") in ACTIVE_STATUSES else run


def status_fields(state: RunState, health: Health) -> dict[str, Any]:
    """``GET /status``: exactly :data:`ALLOWED_FIELDS`, every string redacted."""
    fields: dict[str, Any] = {
        "run_id": state.run_id,
        "status": state.status,
        "current_round": state.current_round,
        "current_stage": state.current_stage,
        "stop_requested": state.stop_requested,
        "pause_requested": state.pause_requested,
        "counters": dict(state.counters),
        "usage": dict(state.usage),
        "gpu_summary": state.gpu_summary(),
        "last_event_ts": state.last_event_ts,
        "health": health.summary(),
        "updated_at": state.updated_at,
    }
    usage = fields["usage"]
    usage[COST_FIELD] = round_cost(usage.get(COST_FIELD))
    redacted = default_redactor().redact_obj(fields)
    assert isinstance(redacted, dict)
    return {key: _finite(value) for key, value in redacted.items()}


def round_cost(usd: object) -> Any:
    """A cost in USD rounded for output (to a millionth of a dollar; the state keeps the exact sum).

    Float sums show their binary noise (``0.0017549999999999998``); a millionth of a dollar is finer than
    any token price, and ``None`` (unknown) stays ``None``.
    """
    if isinstance(usd, float) and math.isfinite(usd):
        return round(usd, COST_DIGITS)
    return usd


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a gauge is reported as unknown (null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    return value


def _text(value: object, max_len: int = 200) -> str:
    return clean(str(value), max_len)


def _nonzero(values: dict[str, Any]) -> str:
    shown = [f"{_text(k)} {v}" for k, v in values.items() if isinstance(v, int | float) and v]
    return " · ".join(shown) if shown else "none yet"


def _cost(value: object) -> str:
    return (
        "unknown"
        if value is None
        else f"${float(value):.4f}"
        if isinstance(value, int | float)
        else _text(value)
    )


def format_status(status: dict[str, Any]) -> str:
    """The ``status`` command's answer as aligned lines, every string cleaned."""
    uptime = status.get("uptime_s")
    rows = [
        (
            "supervisor",
            f"pid {status.get('pid')} · up {fmt_duration(uptime if isinstance(uptime, int | float) else None)} · "
            f"{status.get('accepted_events', 0)} events accepted",
        )
    ]
    reason = status.get("health_reason") or status.get("problem")
    if reason:
        rows.append(("health", f"degraded: {_text(reason, 300)}"))
    http = status.get("http")
    if isinstance(http, dict):
        if http.get("error"):
            rows.append(("http", f"DOWN: {_text(http['error'])}"))
        else:
            rows.append(("http", f"{_text(http.get('url'))} (pid {http.get('pid')})"))
    if status.get("run_id") is None:
        rows.append(("run", f"none yet (status {_text(status.get('status'))})"))
    else:
        rows.append(("run", f"{_text(status['run_id'])} · {_text(status.get('status'))}"))
        hint = resume_hint(status)
        if hint:
            rows.append(("resume", hint))
        rows.append(
            (
                "round",
                f"{status.get('current_round')}/{status.get('total_rounds')} · "
                f"stage {_text(status.get('current_stage') or '-')}",
            )
        )
        flags = [name.replace("_", " ") for name in ("stop_requested", "pause_requested") if status.get(name)]
        if flags:
            rows.append(("requested", ", ".join(flags)))
        if status.get("pause_requested") and status.get("status") != "paused" and status.get("pause_hint"):
            rows.append(("pause", _text(status["pause_hint"])))  # what the pause waits for
        outage = _outage(status.get("teacher_outage"))
        if outage is not None:
            rows.append(("teacher", outage_text(outage)))
        rows.append(("counters", _nonzero(dict(status.get("counters") or {}))))
        usage = dict(status.get("usage") or {})
        rows.append(
            (
                "usage",
                f"{_nonzero({k: v for k, v in usage.items() if k != 'estimated_cost_usd'})} · "
                f"cost {_cost(usage.get('estimated_cost_usd'))}",
            )
        )
        external = status.get("external")
        for source, gauges in (external.items() if isinstance(external, dict) else ()):
            if isinstance(gauges, dict):  # a training script reporting beside the run, as itself
                rows.append(("external", f"{_text(source, 80)} · step {gauges.get('step')}/{gauges.get('total')}"
                                         f" · loss {_text(gauges.get('loss'))}"))
        rows.append(("last event", _text(status.get("last_event_ts") or "-")))
        ledger = status.get("ledger_bytes")
        if isinstance(ledger, int):
            rows.append(("ledger", f"{ledger:,} bytes"))
        if status.get("sandbox_warning"):
            rows.append(("warning", _text(status["sandbox_warning"])))
    gpu = dict(status.get("gpu_summary") or {})
    if gpu.get("vram_total_mb") is not None:
        util = gpu.get("util_pct")
        rows.append(
            (
                "gpu",
                f"{gpu.get('vram_used_mb')}/{gpu.get('vram_total_mb')} MB VRAM"
                + (f" · {util}% util" if util is not None else ""),
            )
        )
    if status.get("run_id") is not None and "evals" in status:
        evals = _evals(status.get("evals"))
        rows.append(("eval", _text(eval_line(evals, status.get("best_round")), 300)))
        if evals and scores_of(evals[-1])[1].val_paired is None:  # else the eval line says it already
            rows.append(("verdict", _text(verdict(*scores_of(evals[-1])), 300)))
    if status.get("error"):
        rows.append(("error", _text(status["error"])))
    return "\n".join(f"{label:<11} {value}" for label, value in rows)


def resume_hint(status: dict[str, Any]) -> str | None:
    """How to continue a run that ended without completing (``None`` for any other)."""
    if status.get("status") not in RESUMABLE_STATUSES or not status.get("run_id"):
        return None
    return f"autotrain-menu --resume-run {_text(status['run_id'])} continues it"


def _outage(value: object) -> TeacherOutage | None:
    """The ``status`` answer's ``teacher_outage``, or ``None`` (also when it does not parse)."""
    try:
        return TeacherOutage.model_validate({**value, "state": "parked"}) if isinstance(value, dict) else None
    except ValueError:
        return None


def _evals(value: object) -> list[EvalSample]:
    """The eval summaries of a ``status``/``list`` answer; entries that do not parse are left out."""
    found = []
    for item in value if isinstance(value, list) else []:
        try:
            found.append(EvalSample.model_validate(item))
        except ValueError:
            continue
    return found


def format_runs(runs: list[dict[str, Any]]) -> str:
    """``list_runs`` as one line per run, newest first."""
    if not runs:
        return "no runs yet"
    lines = [
        f"{'RUN':<30} {'STATUS':<12} {'ROUNDS':<7} {'STARTED':<21} {'DURATION':<9} {'COST':<10} "
        f"{'BEST PASS@1':<17} {'VAL LOSS':<9}"
    ]
    for run in runs:
        rounds = f"{run.get('rounds_done', '-')}/{run.get('total_rounds', '-')}"
        best = run.get("best_round")
        rate = run.get("best_pass_at_1")
        shown = "-" if best is None else f"{rate:.2f} (round {best})" if isinstance(rate, float) else f"- (round {best})"
        loss = run.get("best_val_loss")
        duration = run.get("duration_s")
        lines.append(
            f"{_text(run.get('run_id')):<30} {_text(run.get('status')):<12} {rounds:<7} "
            f"{_started(run.get('started_at')):<21} "
            f"{duration_text(duration):<9} {_cost(run.get('estimated_cost_usd')):<10} {shown:<17} "
            f"{f'{loss:.4f}' if isinstance(loss, float) else '-':<9}"
        )
    # A run that cannot be read says why (a lost ledger and state.json), and how to count it again.
    lines += [_text(run["problem"], 600) for run in runs if run.get("problem")]
    return "\n".join(lines)


def _started(ts: object) -> str:
    """When a run started, to the second (``2026-12-06T23:37:09Z``): whole, never cut inside its time."""
    text = _text(ts or "-")
    return f"{text[:19]}Z" if len(text) >= 19 and text[10:11] == "T" else text


def duration_text(seconds: object) -> str:
    """A run's duration as ``--list`` and ``--compare`` show it: ``4m17s``, ``1h05m``; ``-`` when unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
