"""The run state and the one reducer that folds events, samples and status changes into it.

The supervisor, every viewer and the offline replay of a finished run use the same functions here, so
they can never disagree about what a sequence of messages means. The reducer is pure in the sense that
matters: the state it produces depends only on the state it was given and the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from heidi_engine.bus.event import (
    MAX_DELTA,
    MAX_TOTAL,
    MAX_TOTAL_COST_USD,
    Event,
    check_count,
    check_usage_delta,
)
from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.paired import PairedScores
from heidi_engine.bus.totals import Sums, add_deltas, add_sums, clamp_totals, zero_counters, zero_usage

Status = Literal["idle", "starting", "running", "paused", "stopping", "stopped", "completed", "failed", "interrupted"]
STATUSES: tuple[str, ...] = (
    "idle", "starting", "running", "paused", "stopping", "stopped", "completed", "failed", "interrupted",
)
ACTIVE_STATUSES = frozenset({"starting", "running", "paused", "stopping"})
FINISHED_STATUSES = frozenset({"stopped", "completed", "failed", "interrupted"})
RESUMABLE_STATUSES = frozenset({"stopped", "interrupted", "failed"})  # what --resume-run continues

RECENT_EVENTS = 200
EXTERNAL_MAX = 8  # external trainers a run shows at once: the latest, by when each was last heard
# "external:NAME": a training script reporting on its own (agents/bus_control.py), or "" (the pipeline's).
EXTERNAL_SOURCE = r"^(external:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$"
MAX_RANKS = 64  # TRAIN_NPROC's upper bound
LOSS_HISTORY = 600


class TrainerGauges(BaseModel):
    """The trainer's gauges at one optimizer step: declared once, carried by :class:`TrainerSample` on
    the bus and kept (the latest) in :class:`TrainerState`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    round: int = Field(default=0, ge=0, le=MAX_DELTA)
    step: int = Field(default=0, ge=0, le=MAX_DELTA)
    total: int = Field(default=0, ge=0, le=MAX_DELTA)
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None
    rank_peak_mb: list[int] | None = Field(default=None, max_length=MAX_RANKS)  # by rank, MiB


_GAUGE_FIELDS = frozenset(TrainerGauges.model_fields)


class TrainerSample(TrainerGauges):
    """Trainer gauges published at every optimizer step, tied to the run they belong to (a sample must
    say which step of how many). ``source`` is empty for the pipeline's own train stage; a training script
    that reports on its own says ``external:NAME``, and its samples never mix with the pipeline's."""

    type: Literal["trainer"] = "trainer"
    run_id: str | None = Field(default=None, max_length=40)
    step: int = Field(ge=0, le=MAX_DELTA)
    total: int = Field(ge=0, le=MAX_DELTA)
    source: str = Field(default="", max_length=80, pattern=EXTERNAL_SOURCE)


class GpuInfo(BaseModel):
    """One GPU as NVML reports it; fields a driver does not support are ``None``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    index: int
    name: str = Field(default="", max_length=200)
    vram_used_mb: float = 0.0
    vram_total_mb: float = 0.0
    util_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class HostInfo(BaseModel):
    """Host CPU and memory, always available (psutil)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu_pct: float = 0.0
    ram_used_mb: float = 0.0
    ram_total_mb: float = 0.0


class SystemSample(BaseModel):
    """A GPU + host sample from the supervisor's sampler."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["system"] = "system"
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)
    host: HostInfo = Field(default_factory=HostInfo)
    gpu_message: str | None = Field(default=None, max_length=500)


class EvalScores(BaseModel):
    """One variant's scores on the held-out set: val loss, and pass@1 with its count and Wilson 95% interval.

    ``val_*`` rates are on the held-out tasks' own unit tests, ``humaneval_*`` on the HumanEval subset;
    a rate is ``None`` when it was not measured (unit-test gate off, or nothing to score). The adapter's
    ``*_paired`` compare it with the base task by task (None for the base, and where not measured).
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
    val_paired: PairedScores | None = None
    humaneval_paired: PairedScores | None = None


class EvalSample(BaseModel):
    """A round's evaluation outcome, sent by the eval stage once its report is written.

    ``base`` was measured once per run (in round ``base_round``) and is reused by every round;
    ``best_round`` is the best round of the run so far (held-out pass@1, then val loss).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["eval"] = "eval"
    run_id: str | None = Field(default=None, max_length=40)
    round: int = Field(ge=0)
    base: EvalScores | None = None
    adapter: EvalScores | None = None
    base_round: int | None = None
    best_round: int | None = None


_ENDPOINT_NAME = r"^https?://[^\s@?#]{1,200}$"  # no user info, query or fragment: never a credential
ENDPOINTS_MAX = 64


class EndpointUsage(BaseModel):
    """One teacher endpoint: ``usage`` and ``errors`` (failed attempts) are summed, the rest is its latest
    state (requests in flight, seconds left out of the pool, reply latency percentiles).

    In a :class:`TeacherSample` the summed fields are deltas since the sender's previous sample (bounded as
    an event's deltas are); in the run state they are the run's totals, whose usage adds up to the run's
    teacher usage (bounded as every total is).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    usage: dict[str, float | int | None] = Field(default_factory=dict)
    errors: int = Field(default=0, ge=0, le=MAX_TOTAL)
    in_flight: int = Field(default=0, ge=0, le=MAX_DELTA)
    out_for_s: float = Field(default=0.0, ge=0)
    latency_p50_s: float | None = Field(default=None, ge=0)
    latency_p95_s: float | None = Field(default=None, ge=0)

    @field_validator("usage")
    @classmethod
    def _check_usage(cls, value: dict[str, float | int | None]) -> dict[str, float | int | None]:
        return check_usage_delta(value, MAX_TOTAL, MAX_TOTAL_COST_USD)


class TeacherSample(BaseModel):
    """What each teacher endpoint of a pool did since the generate stage's previous sample, by endpoint
    name (scheme://host:port/path, never credentials); ``outage`` when the stage parked or is back."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["teacher"] = "teacher"
    run_id: str | None = Field(default=None, max_length=40)
    endpoints: dict[Annotated[str, StringConstraints(pattern=_ENDPOINT_NAME)], EndpointUsage] = Field(
        max_length=ENDPOINTS_MAX
    )
    outage: TeacherOutage | None = None

    @field_validator("endpoints")
    @classmethod
    def _check_deltas(cls, value: dict[str, EndpointUsage]) -> dict[str, EndpointUsage]:
        for name, entry in value.items():
            check_usage_delta(entry.usage)
            check_count(f"endpoint {name} errors", entry.errors)
        return value


Sample = Annotated[TrainerSample | SystemSample | EvalSample | TeacherSample, Field(discriminator="type")]
GAUGE_TYPES = (TrainerSample, SystemSample, EvalSample, TeacherSample)


class AgentInfo(BaseModel):
    """What the supervisor knows of one running agent; the pgid lets a restart kill stale groups."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    problem: str | None = None
    http_error: str | None = None
    reset: bool = False  # the state was replaced (a run started or resumed): viewers take a snapshot


class TrainerState(TrainerGauges):
    """Latest trainer gauges and the loss curve of the whole run, at bounded memory.

    ``loss_history`` holds ``(run step, loss)``: each round's steps continue where the previous round's
    ended (``round_starts``: round -> its first run step). When it passes ``LOSS_HISTORY`` points every
    other point is dropped and ``history_stride`` doubles, so the curve always spans the full run,
    evenly thinned, instead of keeping only its most recent points.
    """

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
    counters: dict[str, int] = Field(default_factory=zero_counters)
    usage: dict[str, float | int | None] = Field(default_factory=zero_usage)
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
    # What keeps the supervisor from doing its job right now (a full disk), for every viewer's health.
    problem: str | None = None
    http_error: str | None = None  # the supervisor's HTTP status server is down, and why
    evals: list[EvalSample] = Field(default_factory=list)  # one per evaluated round, in round order
    best_round: int | None = None
    teacher_endpoints: dict[str, EndpointUsage] = Field(default_factory=dict)  # a pool's usage, by endpoint
    teacher_outage: TeacherOutage | None = None  # the generate stage parked on an unreachable teacher
    # Training scripts reporting on their own (source -> their latest gauges): never the pipeline's counts.
    external: dict[str, TrainerGauges] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _totals_in_bounds(cls, data: Any) -> Any:
        if isinstance(data, dict):
            clamp_totals("run state", data.get("counters"), data.get("usage"))
            endpoints = data.get("teacher_endpoints")
            for name, entry in endpoints.items() if isinstance(endpoints, dict) else ():
                if isinstance(entry, dict):
                    errors = {"errors": entry["errors"]} if "errors" in entry else {}
                    clamp_totals(f"run state, endpoint {name}", errors, entry.get("usage"))
                    entry.update(errors)
        return data

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


def status_after(event_type: str, level: str) -> Status | None:
    """The run status a pipeline event sets, or ``None`` for every other event."""
    if event_type == "pipeline_start":
        return "running"
    if event_type == "pipeline_complete":
        return "completed"
    if event_type == "pipeline_stop":
        return "failed" if level == "error" else "stopped"
    return None


def apply_event(state: RunState, event: Event, record: dict[str, Any] | None = None) -> RunState:
    """Fold one accepted event into ``state`` (mutated and returned).

    ``record`` is the event's :meth:`~Event.to_record` when the caller already has it (the hot path).
    """
    return apply_events(state, [(event, event.to_record() if record is None else record)])


def apply_events(state: RunState, batch: Sequence[tuple[Event, dict[str, Any]]]) -> RunState:
    """Fold a batch of accepted events, each with its record, into ``state`` in one pass (mutated and
    returned): the same state as :func:`apply_event` applied to each in turn, its counts summed once
    for the batch (:class:`~heidi_engine.bus.totals.Sums`)."""
    if not batch:
        return state
    if state.run_id is None:
        state.run_id = batch[0][0].run_id
    recent = state.recent_events
    recent.extend([record for _event, record in batch[-RECENT_EVENTS:]])
    if len(recent) > RECENT_EVENTS:
        del recent[: len(recent) - RECENT_EVENTS]
    # An external trainer's events count nothing and set neither round, stage, status nor error. The
    # records are read: they hold the events' fields, and a dict is read faster than a model.
    ours = [record for _event, record in batch if record["stage"] != "external"]
    add_sums(state.counters, state.usage, Sums(ours), ours)
    for record in [r for r in ours if r["event_type"] != "progress" or r["level"] == "error"]:
        event_type = record["event_type"]
        if event_type != "progress":
            state.teacher_outage = None  # a stage or the run began or ended, or an agent failed: none is parked
            if event_type == "stage_start":
                state.current_stage = record["stage"]
            status = status_after(event_type, record["level"])
            if status is not None:
                state.status = status
                if status == "running":
                    state.started_at = state.started_at or record["ts"]
        if record["level"] == "error":
            state.error = record.get("error") or record["message"]
    # Every event sets these (the last one wins); written straight into the model's fields (what
    # pydantic's own model_construct does) because this is the hot path of the supervisor and of every viewer.
    fields = state.__dict__
    if ours:
        fields["current_round"] = ours[-1]["round"]
    fields["event_count"] = state.event_count + len(batch)
    fields["last_event_ts"] = fields["updated_at"] = batch[-1][0].ts
    return state


def apply_sample(state: RunState, sample: TrainerSample | SystemSample | EvalSample | TeacherSample) -> RunState:
    """Fold a gauge sample into ``state``: latest values, the bounded loss curve, the eval outcomes, the
    teacher endpoints' usage."""
    if isinstance(sample, TeacherSample):
        if sample.outage is not None:
            state.teacher_outage = sample.outage if sample.outage.state == "parked" else None
        for name, delta in sample.endpoints.items():
            if name not in state.teacher_endpoints and len(state.teacher_endpoints) >= ENDPOINTS_MAX:
                continue
            entry = state.teacher_endpoints.setdefault(name, EndpointUsage(usage=zero_usage()))
            add_deltas({}, entry.usage, {}, delta.usage)
            entry.errors += delta.errors
            entry.in_flight, entry.out_for_s = delta.in_flight, delta.out_for_s
            entry.latency_p50_s, entry.latency_p95_s = delta.latency_p50_s, delta.latency_p95_s
        return state
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
    if sample.source:
        external = state.external
        if sample.source not in external and len(external) >= EXTERNAL_MAX:
            del external[next(iter(external))]  # the one heard from least recently
        external.pop(sample.source, None)
        external[sample.source] = TrainerGauges.model_validate(sample.model_dump(include=set(_GAUGE_FIELDS)))
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
    for name in _GAUGE_FIELDS:
        setattr(trainer, name, getattr(sample, name))
    return state


def apply_status(state: RunState, patch: StatusPatch) -> RunState:
    """Apply the fields a supervisor-side status change set."""
    for name in patch.model_fields_set - {"type", "reset"}:
        setattr(state, name, getattr(patch, name))
    return state
