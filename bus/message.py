"""Typed bodies of every message kind that travels on the bus.

=========  ==========================  =========================================================
kind       direction                   body
=========  ==========================  =========================================================
event      agent → ingress → egress    a batch: a list of :class:`~heidi_engine.bus.event.Event`
sample     agent → ingress → egress    :class:`TrainerSample`, :class:`SystemSample`, ...
state      agent → ingress             :class:`AgentStatus` (agent heartbeat, parked or running)
state      supervisor → egress         :class:`Heartbeat` or :class:`StatusPatch`
control    supervisor → egress         :class:`ControlBroadcast` (pause/resume/stop to agents)
command    client → control            :class:`Command`
reply      control → client            :class:`Reply`
=========  ==========================  =========================================================
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from heidi_engine.bus.event import Event
from heidi_engine.bus.state import EvalSample, StatusPatch, SystemSample, TeacherSample, TrainerSample

Kind = Literal["event", "sample", "state", "control", "command", "reply", "feed"]
KINDS: tuple[str, ...] = ("event", "sample", "state", "control", "command", "reply", "feed")


class AgentStatus(BaseModel):
    """An agent's heartbeat: which stage, which process, and whether it is parked (paused)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["agent"] = "agent"
    stage: str = Field(min_length=1, max_length=40)
    pid: int = Field(gt=0)
    # "done" is an agent's last message on its event socket: everything it sent before has arrived.
    phase: Literal["running", "parked", "stopping", "done"] = "running"
    run_id: str | None = None


class Heartbeat(BaseModel):
    """Published at least once a second so viewers can tell quiet from dead, and spot a missed seq."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["heartbeat"] = "heartbeat"
    seq: int = Field(ge=0)
    run_id: str | None = None
    status: str = "idle"
    stop_requested: bool = False
    pause_requested: bool = False


class ControlBroadcast(BaseModel):
    """Tells agents to pause, resume or stop at their next safe boundary."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["pause", "resume", "stop"]
    run_id: str | None = None


class Command(BaseModel):
    """A control request; the reply carries the same ``id``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=40)
    args: dict[str, Any] = Field(default_factory=dict)


class Reply(BaseModel):
    """The one reply to a :class:`Command`: ``ok`` with a result, or a clear refusal in ``error``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    ok: bool
    result: Any = None
    error: str | None = None


StateBody = Annotated[AgentStatus | Heartbeat | StatusPatch, Field(discriminator="type")]
SampleBody = Annotated[TrainerSample | SystemSample | EvalSample | TeacherSample, Field(discriminator="type")]

# An event batch is validated in one call (the supervisor's hot path), not one call per event.
EVENTS_ADAPTER: TypeAdapter[list[Event]] = TypeAdapter(list[Event])

BODY_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "event": TypeAdapter(Event),
    "sample": TypeAdapter(SampleBody),
    "state": TypeAdapter(StateBody),
    "control": TypeAdapter(ControlBroadcast),
    "command": TypeAdapter(Command),
    "reply": TypeAdapter(Reply),
}


# -- the UI feed (supervisor → egress, topic "feed"): see supervisor/ui_feed.py ------------------------

FEED_EVENTS = 200  # the newest events one delta carries at most; the others are counted in left_out


class FeedDelta(BaseModel):
    """What changed in the run state since the feed's previous delta, published at most every 100 ms and
    only when something changed. ``feed`` counts the deltas of a supervisor session (a client that sees
    one missing takes a snapshot, whose ``feed`` says which delta follows it); ``seq`` is the state's
    ``seq`` it brings a client to; ``fields`` are the changed top-level fields of
    :class:`~heidi_engine.bus.state.RunState` as JSON (never ``recent_events``); ``events`` the newest
    (at most :data:`FEED_EVENTS`) of the events accepted since, oldest first, and ``left_out`` how many
    of those it does not carry."""

    model_config = ConfigDict(extra="forbid")

    feed: int = Field(ge=1)
    seq: int = Field(ge=0)
    fields: dict[str, Any] = Field(default_factory=dict)
    # Event records as the supervisor wrote them to disk: trusted as every event it signs is (a viewer
    # checks only that each is a map), not copied key by key here (half a delta's decoding otherwise).
    events: list[Any] = Field(default_factory=list, max_length=FEED_EVENTS)
    left_out: int = Field(default=0, ge=0)


BODY_ADAPTERS["feed"] = TypeAdapter(FeedDelta)
