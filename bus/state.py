"""The run state and the one reducer that folds events, samples and status changes into it.

The supervisor, every viewer and the offline replay of a finished run use the same functions here, so
they can never disagree about what a sequence of messages means. The reducer is pure in the sense that
matters: the state it produces depends only on the state it was given and the message.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from heidi_engine.bus.event import COST_FIELD, COUNTER_NAMES, USAGE_COUNT_NAMES, Event

Status = Literal["idle", "starting", "running", "paused", "stopping", "stopped", "completed", "failed", "interrupted"]
STATUSES: tuple[str, ...] = (
    "idle", "starting", "running", "paused", "stopping", "stopped", "completed", "failed", "interrupted",
)
ACTIVE_STATUSES = frozenset({"starting", "running", "paused", "stopping"})
FINISHED_STATUSES = frozenset({"stopped", "completed", "failed", "interrupted"})

RECENT_EVENTS = 200
LOSS_HISTORY = 600


class TrainerSample(BaseModel):
    """Trainer gauges published at every optimizer step."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["trainer"] = "trainer"
    round: int = Field(default=0, ge=0)
    step: int = Field(ge=0)
    total: int = Field(ge=0)
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None


class GpuInfo(BaseModel):
    """One GPU as NVML reports it; fields a driver does not support are ``None``."""

    model_config = ConfigDict(extra="forbid")

    index: int
    name: str = ""
    vram_used_mb: float = 0.0
    vram_total_mb: float = 0.0
    util_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class HostInfo(BaseModel):
    """Host CPU and memory, always available (psutil)."""

    model_config = ConfigDict(extra="forbid")

    cpu_pct: float = 0.0
    ram_used_mb: float = 0.0
    ram_total_mb: float = 0.0


class SystemSample(BaseModel):
    """A GPU + host sample from the supervisor's sampler."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["system"] = "system"
    gpus: list[GpuInfo] = Field(default_factory=list)
    host: HostInfo = Field(default_factory=HostInfo)
    gpu_message: str | None = None


class EvalScores(BaseModel):
    """One variant's scores on the held-out set: val loss, and pass@1 with its count and Wilson 95% interval.

    ``val_*`` rates are on the held-out tasks' own unit tests, ``humaneval_*`` on the HumanEval subset;
    a rate is ``None`` when it was not measured (unit-test gate off, or nothing to score).
    """

    model_config = ConfigDict(extra="ignore")

    val_loss: float | None = None
    val_ppl: float | None = None
    n_val: int = 0
    val_pass_at_1: float | None = None
    val_passed: int = 0
    val_ci: tuple[float, float] | None = None
    humaneval_pass_at_1: float | None = None
    humaneval_passed: int = 0
    n_humaneval: int = 0
    humaneval_ci: tuple[float, float] | None = None


class EvalSample(BaseModel):
    """A round's evaluation outcome, sent by the eval stage once its report is written.

    ``base`` was measured once per run (in round ``base_round``) and is reused by every round;
    ``best_round`` is the best round of the run so far (held-out pass@1, then val loss).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["eval"] = "eval"
    round: int = Field(ge=0)
    base: EvalScores | None = None
    adapter: EvalScores | None = None
    base_round: int | None = None
    best_round: int | None = None


Sample = Annotated[TrainerSample | SystemSample | EvalSample, Field(discriminator="type")]
GAUGE_TYPES = (TrainerSample, SystemSample, EvalSample)


class AgentInfo(BaseModel):
    """What the supervisor knows of one running agent; the pgid lets a restart kill stale groups."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    pid: int
    pgid: int
    phase: Literal["starting", "running", "parked", "exited"] = "starting"
    restarts: int = 0


class StatusPatch(BaseModel):
    """A supervisor-side change of the run state that no event expresses (status, flags, agents).

    Only the fields that were set are applied (and only those travel on the wire).
    """

    model_config = ConfigDict(extra="forbid")
    wire_sparse: ClassVar[bool] = True

    type: Literal["status"] = "status"
    run_id: str | None = None
    status: Status | None = None
    total_rounds: int | None = None
    stop_requested: bool | None = None
    pause_requested: bool | None = None
    error: str | None = None
    config: dict[str, Any] | None = None
    agents: dict[str, AgentInfo] | None = None
    best_adapter: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    reset: bool = False  # the state was replaced (a run started or resumed): viewers take a snapshot


def _zero_counters() -> dict[str, int]:
    return dict.fromkeys(COUNTER_NAMES, 0)


def _zero_usage() -> dict[str, float | int | None]:
    usage: dict[str, float | int | None] = dict.fromkeys(USAGE_COUNT_NAMES, 0)
    usage[COST_FIELD] = 0.0
    return usage


class TrainerState(BaseModel):
    """Latest trainer gauges and the loss curve of the whole run, at bounded memory.

    ``loss_history`` holds ``(run step, loss)``: each round's steps continue where the previous round's
    ended (``round_starts``: round -> its first run step). When it passes ``LOSS_HISTORY`` points every
    other point is dropped and ``history_stride`` doubles, so the curve always spans the full run,
    evenly thinned, instead of keeping only its most recent points.
    """

    model_config = ConfigDict(extra="forbid")

    round: int = 0
    step: int = 0
    total: int = 0
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None
    loss_history: list[tuple[int, float]] = Field(default_factory=list)
    history_stride: int = 1
    round_starts: dict[int, int] = Field(default_factory=dict)


class RunState(BaseModel):
    """Everything a viewer shows, and what ``state.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = None
    status: Status = "idle"
    current_round: int = 0
    total_rounds: int = 0
    current_stage: str | None = None
    stop_requested: bool = False
    pause_requested: bool = False
    counters: dict[str, int] = Field(default_factory=_zero_counters)
    usage: dict[str, float | int | None] = Field(default_factory=_zero_usage)
    trainer: TrainerState = Field(default_factory=TrainerState)
    gpus: list[GpuInfo] = Field(default_factory=list)
    host: HostInfo | None = None
    gpu_message: str | None = None
    agents: dict[str, AgentInfo] = Field(default_factory=dict)
    recent_events: list[dict[str, Any]] = Field(default_factory=list)
    event_count: int = 0
    last_event_ts: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    error: str | None = None
    best_adapter: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    seq: int = 0
    evals: list[EvalSample] = Field(default_factory=list)  # one per evaluated round, in round order
    best_round: int | None = None

    def gpu_summary(self) -> dict[str, float | None]:
        """The HTTP API's ``gpu_summary``: VRAM summed over GPUs, utilisation averaged; ``None`` when none."""
        if not self.gpus:
            return {"vram_used_mb": None, "vram_total_mb": None, "util_pct": None}
        utils = [g.util_pct for g in self.gpus if g.util_pct is not None]
        return {
            "vram_used_mb": round(sum(g.vram_used_mb for g in self.gpus), 1),
            "vram_total_mb": round(sum(g.vram_total_mb for g in self.gpus), 1),
            "util_pct": round(sum(utils) / len(utils), 1) if utils else None,
        }


def apply_event(state: RunState, event: Event, record: dict[str, Any] | None = None) -> RunState:
    """Fold one accepted event into ``state`` (mutated and returned).

    ``record`` is the event's :meth:`~Event.to_record` when the caller already has it (the hot path).
    """
    if state.run_id is None:
        state.run_id = event.run_id
    counters = state.counters
    for name, delta in event.counters_delta.items():
        counters[name] = counters.get(name, 0) + delta
    usage = state.usage
    for name, value in event.usage_delta.items():
        if name == COST_FIELD:
            # Unknown is sticky: once any part of the cost is unknown, the total is unknown.
            current = usage.get(COST_FIELD)
            usage[COST_FIELD] = None if value is None or current is None else current + value
        else:
            usage[name] = (usage.get(name) or 0) + (value or 0)
    if event.event_type == "stage_start":
        state.current_stage = event.stage
    kind = event.event_type
    if kind == "pipeline_start":
        state.status = "running"
        state.started_at = state.started_at or event.ts
    elif kind == "pipeline_complete":
        state.status = "completed"
    elif kind == "pipeline_stop":
        state.status = "failed" if event.level == "error" else "stopped"
    if event.level == "error":
        state.error = event.error or event.message
    if record is None:
        record = event.to_record()
    recent = state.recent_events
    recent.append(record)
    if len(recent) > RECENT_EVENTS:
        del recent[: len(recent) - RECENT_EVENTS]
    # Every event sets these; written straight into the model's fields (what pydantic's own
    # model_construct does) because this is the hot path of the supervisor and of every viewer.
    fields = state.__dict__
    fields["current_round"] = event.round
    fields["event_count"] = state.event_count + 1
    fields["last_event_ts"] = fields["updated_at"] = event.ts
    return state


def apply_sample(state: RunState, sample: TrainerSample | SystemSample | EvalSample) -> RunState:
    """Fold a gauge sample into ``state``: latest values, the bounded loss curve, the eval outcomes."""
    if isinstance(sample, EvalSample):
        # A re-run eval (a resumed round) replaces that round's entry.
        state.evals = sorted([e for e in state.evals if e.round != sample.round] + [sample], key=lambda e: e.round)
        state.best_round = sample.best_round
        return state
    if isinstance(sample, SystemSample):
        state.gpus = sample.gpus
        state.host = sample.host
        state.gpu_message = sample.gpu_message
        return state
    trainer = state.trainer
    history = trainer.loss_history
    starts = trainer.round_starts
    if sample.round not in starts:
        # A new round continues the run's step axis after the furthest step seen so far.
        starts[sample.round] = max(trainer.step + starts.get(trainer.round, 0), history[-1][0] if history else 0)
    at = starts[sample.round] + sample.step
    if history and at <= history[-1][0]:
        # A resume from a checkpoint replays steps: the curve is cut back, never duplicated.
        while history and history[-1][0] >= at:
            history.pop()
    if sample.loss is not None and (not history or at - history[-1][0] >= trainer.history_stride):
        history.append((at, sample.loss))
        if len(history) > LOSS_HISTORY:
            del history[1::2]  # thin the whole curve evenly, keeping its first point
            trainer.history_stride *= 2
    for name in ("round", "step", "total", "loss", "learning_rate", "grad_norm", "tokens_per_s",
                 "samples_per_s", "eta_s", "memory_mb"):
        setattr(trainer, name, getattr(sample, name))
    return state


def apply_status(state: RunState, patch: StatusPatch) -> RunState:
    """Apply the fields a supervisor-side status change set."""
    for name in patch.model_fields_set - {"type", "reset"}:
        setattr(state, name, getattr(patch, name))
    return state
