"""What the HTTP status server shows of a :class:`~heidi_engine.ui.viewer.View`: pure functions, no I/O.

``status_fields`` is the allow-list of the HTTP API (exactly those keys, redacted again at this output
edge), ``assess`` turns the subscriber's liveness into ``ok`` / ``degraded`` / ``down``, and
``metrics_text`` renders the Prometheus text exposition format (version 0.0.4); ``format_status`` and
``format_runs`` are the menu's human-readable forms of the ``status`` and ``list_runs`` answers. Keeping
them apart from the server and the menu makes the field set, the health rules and the wording testable
without sockets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from heidi_engine.bus.event import COST_FIELD
from heidi_engine.bus.redaction import clean, default_redactor
from heidi_engine.bus.state import RESUMABLE_STATUSES, STATUSES, EvalSample, RunState
from heidi_engine.ui.eval_text import eval_line
from heidi_engine.ui.panels_text import fmt_duration
from heidi_engine.ui.viewer import View

__all__ = [
    "ALLOWED_FIELDS",
    "Health",
    "assess",
    "format_runs",
    "format_status",
    "metrics_text",
    "resume_hint",
    "round_cost",
    "status_fields",
]

ALLOWED_FIELDS: tuple[str, ...] = (
    "run_id", "status", "current_round", "current_stage", "stop_requested", "pause_requested",
    "counters", "usage", "gpu_summary", "last_event_ts", "health", "updated_at",
)  # fmt: skip
_LABEL_MAX = 120
COST_DIGITS = 6
_NAME_OK = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


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


def assess(view: View, absent_reason: str | None) -> Health:
    """Health from the live view and a look at the connection file.

    ``absent_reason`` is why no supervisor process exists (no connection file, or its pid is gone), or
    ``None`` when one does. No process: down. Heard from within the last 3 s: ok, unless the supervisor
    itself reports a problem (a full disk): degraded with that reason. A process that is silent (or not
    yet heard by this viewer): degraded, since it may be busy, hung or just starting.
    """
    if absent_reason is not None:
        return Health("down", absent_reason)
    if view.connected:
        problem = view.state.problem
        return Health("degraded", problem) if problem else Health("ok")
    if view.silence_s is None:
        return Health("degraded", "connecting to the supervisor: not heard from yet")
    return Health("degraded", f"supervisor silent for {view.silence_s:.1f} s")


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
        "health": health.state,
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


# -- Prometheus text format -----------------------------------------------------------------------


def _label_value(text: str) -> str:
    return clean(text, _LABEL_MAX).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Exposition:
    """Collects metric families; each is written once with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float | int | None]],
    ) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows or not _NAME_OK.fullmatch(name):
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            inner = ",".join(f'{key}="{_label_value(text)}"' for key, text in labels.items())
            self.lines.append(f"{name}{'{' + inner + '}' if inner else ''} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | int | None) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _as_number(value: object) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def metrics_text(view: View, health: Health) -> str:
    """``GET /metrics``: run counters, usage, trainer, GPU and host gauges, and ``autotrain_up``."""
    state = view.state
    out = _Exposition()
    out.one(
        "autotrain_up",
        "gauge",
        "1 when the supervisor is reachable and was heard within 3 s.",
        1 if health.state == "ok" else 0,
    )
    out.family(
        "autotrain_run_status",
        "gauge",
        "1 for the current run status, 0 for the others.",
        [({"status": status}, 1 if state.status == status else 0) for status in STATUSES],
    )
    out.one(
        "autotrain_current_round", "gauge", "Round the run is in (0 before the first).", state.current_round
    )
    out.one("autotrain_total_rounds", "gauge", "Rounds the run was started with.", state.total_rounds)
    out.one(
        "autotrain_events_total", "counter", "Events of this run seen by the supervisor.", state.event_count
    )
    for name, count in sorted(state.counters.items()):
        out.one(f"autotrain_{name}_total", "counter", f"Run counter {name}.", _as_number(count))
    for name, value in sorted(state.usage.items()):
        if name == "estimated_cost_usd":
            # Unknown cost (None) is left out rather than shown as 0.
            out.one(
                "autotrain_estimated_cost_usd",
                "gauge",
                "Estimated teacher cost so far, in USD.",
                _as_number(round_cost(value)),
            )
        else:
            out.one(f"autotrain_usage_{name}_total", "counter", f"Teacher usage {name}.", _as_number(value))
    trainer = state.trainer
    out.one("autotrain_trainer_step", "gauge", "Current optimizer step of the trainer.", trainer.step)
    out.one("autotrain_trainer_total_steps", "gauge", "Optimizer steps planned this round.", trainer.total)
    out.one("autotrain_trainer_loss", "gauge", "Latest training loss.", trainer.loss)
    out.one("autotrain_trainer_learning_rate", "gauge", "Latest learning rate.", trainer.learning_rate)
    out.one(
        "autotrain_trainer_tokens_per_second",
        "gauge",
        "Training throughput, tokens per second.",
        trainer.tokens_per_s,
    )
    gpus = [({"gpu": str(g.index), "name": g.name}, g) for g in state.gpus]
    out.family(
        "autotrain_gpu_vram_used_mb",
        "gauge",
        "GPU memory in use, MB.",
        [(labels, g.vram_used_mb) for labels, g in gpus],
    )
    out.family(
        "autotrain_gpu_vram_total_mb",
        "gauge",
        "GPU memory size, MB.",
        [(labels, g.vram_total_mb) for labels, g in gpus],
    )
    out.family(
        "autotrain_gpu_util_percent",
        "gauge",
        "GPU utilisation, percent.",
        [(labels, g.util_pct) for labels, g in gpus],
    )
    host = state.host
    if host is not None:
        out.one("autotrain_host_cpu_percent", "gauge", "Host CPU utilisation, percent.", host.cpu_pct)
        out.one("autotrain_host_ram_used_mb", "gauge", "Host memory in use, MB.", host.ram_used_mb)
        out.one("autotrain_host_ram_total_mb", "gauge", "Host memory size, MB.", host.ram_total_mb)
    _eval_gauges(out, state)
    if view.silence_s is not None:
        out.one(
            "autotrain_supervisor_silence_seconds",
            "gauge",
            "Seconds since the supervisor was last heard.",
            round(view.silence_s, 3),
        )
    return out.text()


_EVAL_GAUGES = (
    ("autotrain_eval_val_loss", "Validation loss on the held-out rows.", "val_loss"),
    ("autotrain_eval_heldout_pass_at_1", "pass@1 on the held-out tasks' own unit tests.", "val_pass_at_1"),
    ("autotrain_eval_heldout_tasks", "Held-out rows scored (the n of the held-out rates).", "n_val"),
    ("autotrain_eval_humaneval_pass_at_1", "pass@1 on the HumanEval subset.", "humaneval_pass_at_1"),
    ("autotrain_eval_humaneval_problems", "HumanEval problems scored.", "n_humaneval"),
)


def _eval_gauges(out: _Exposition, state: RunState) -> None:
    """Each evaluated round's scores, labelled by round and variant (base, adapter), and the best round."""
    scored = [
        ({"round": str(sample.round), "variant": variant}, scores)
        for sample in state.evals
        for variant, scores in (("base", sample.base), ("adapter", sample.adapter))
        if scores is not None
    ]
    for name, help_text, field in _EVAL_GAUGES:
        out.family(name, "gauge", help_text, [(labels, getattr(s, field)) for labels, s in scored])
    for bound, index in (("lower", 0), ("upper", 1)):
        out.family(
            f"autotrain_eval_heldout_pass_at_1_{bound}",
            "gauge",
            f"{bound.capitalize()} end of the Wilson 95% interval of the held-out pass@1.",
            [(labels, s.val_ci[index] if s.val_ci else None) for labels, s in scored],
        )
    out.one("autotrain_eval_best_round", "gauge", "The best round so far (held-out pass@1, then val loss).", state.best_round)


# -- human-readable text for the menu -------------------------------------------------------------


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
    if status.get("problem"):
        rows.append(("health", f"degraded: {_text(status['problem'])}"))
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
        rows.append(("counters", _nonzero(dict(status.get("counters") or {}))))
        usage = dict(status.get("usage") or {})
        rows.append(
            (
                "usage",
                f"{_nonzero({k: v for k, v in usage.items() if k != 'estimated_cost_usd'})} · "
                f"cost {_cost(usage.get('estimated_cost_usd'))}",
            )
        )
        rows.append(("last event", _text(status.get("last_event_ts") or "-")))
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
        rows.append(("eval", _text(eval_line(_evals(status.get("evals")), status.get("best_round")), 300)))
    if status.get("error"):
        rows.append(("error", _text(status["error"])))
    return "\n".join(f"{label:<11} {value}" for label, value in rows)


def resume_hint(status: dict[str, Any]) -> str | None:
    """How to continue a run that ended without completing (``None`` for any other)."""
    if status.get("status") not in RESUMABLE_STATUSES or not status.get("run_id"):
        return None
    return f"autotrain-menu --resume-run {_text(status['run_id'])} continues it"


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
            f"{_text(run.get('started_at') or '-')[:20]:<21} "
            f"{_duration(duration):<9} {_cost(run.get('estimated_cost_usd')):<10} {shown:<17} "
            f"{f'{loss:.4f}' if isinstance(loss, float) else '-':<9}"
        )
    return "\n".join(lines)


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
