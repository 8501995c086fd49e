"""The frozen v1.0 event schema.

An event is exactly the twelve fields of the seed's schema. The model refuses unknown fields, enforces the
value sets, the ``Z`` timestamps and the run_id pattern, truncates ``message`` (500) and ``error`` (200)
after redaction, and redacts each artifact path, so that nothing oversized or secret can be written or
published.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from heidi_engine.bus.redaction import clean, redact_path

EVENT_VERSION = "1.0"
MESSAGE_MAX = 500
ERROR_MAX = 200
# Longer text is refused before redaction runs: redacting megabytes would stall the supervisor's loop.
RAW_TEXT_MAX = 8192

Stage = Literal["generate", "validate", "train", "eval", "round_start", "round_end", "external"]
# The work stages in the order a round runs them (round_start and round_end mark a round's bounds; external
# is a training script reporting on its own, outside the pipeline): the one list of them, for the driver, the
# menu's progress and the logs.
PIPELINE_STAGES: tuple[str, ...] = get_args(Stage)[:4]
Level = Literal["info", "warn", "error", "success"]
EventType = Literal[
    "stage_start", "stage_end", "progress", "error", "pipeline_start", "pipeline_stop", "pipeline_complete"
]
STAGES: tuple[str, ...] = get_args(Stage)
LEVELS: tuple[str, ...] = get_args(Level)
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

COUNTER_NAMES: tuple[str, ...] = (
    "teacher_generated", "teacher_failed", "validated_ok", "rejected_schema", "rejected_secret",
    "rejected_dedup", "test_pass", "test_fail", "train_step", "eval_pass", "eval_total",
)
USAGE_COUNT_NAMES: tuple[str, ...] = ("requests_sent", "input_tokens", "output_tokens", "rate_limits_hit", "retries")
COST_FIELD = "estimated_cost_usd"
USAGE_NAMES: tuple[str, ...] = (*USAGE_COUNT_NAMES, COST_FIELD)

# The bounds of every number an event adds up. One delta is a count in 0..MAX_DELTA (events, tokens,
# requests) or a finite cost in 0..MAX_COST_USD; a total stops at MAX_TOTAL / MAX_TOTAL_COST_USD (the
# supervisor refuses an event that would pass it), far inside what JSON and msgpack carry (2**63 - 1), so no
# sum can overflow a snapshot or turn into Infinity in a file.
MAX_DELTA = 2**31
MAX_COST_USD = 1e6
MAX_TOTAL = 2**62
MAX_TOTAL_COST_USD = 1e12

RUN_ID_RE = re.compile(r"^run_\d{8}_\d{6}_[0-9a-f]{8}$")
TS_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"  # ISO 8601 UTC, as every timestamp is sent
_TS_RE = re.compile(TS_PATTERN)
ARTIFACT_PATH_MAX = 300
ARTIFACT_PATHS_MAX = 64
_ARTIFACT_RE = re.compile(rf"^(?!/)(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9_.\-/]{{1,{ARTIFACT_PATH_MAX}}}$")
# What stands for a path that its secrets' markers made too long (it still names no file, and is one).
_REDACTED_PATH = "REDACTED-artifact_path"


def _already_clean(info: ValidationInfo) -> bool:
    # Viewers decoding the supervisor's signed egress skip a second redaction pass: the supervisor
    # redacted every event before publishing it, and viewers redact again at their output edge.
    return bool(info.context and info.context.get("redacted"))


def _check_raw_length(field: str, value: str) -> None:
    if len(value) > RAW_TEXT_MAX:
        raise ValueError(f"{field} is {len(value)} characters; at most {RAW_TEXT_MAX} are accepted")


def fit_raw_text(value: str) -> str:
    """``value`` cut to what an event accepts before redaction (a sender's side of :data:`RAW_TEXT_MAX`).

    Safe to cut before redacting: the field is cut again to at most 500 characters after redaction, so
    text near the first cut never reaches the event.
    """
    return value if len(value) <= RAW_TEXT_MAX else value[:RAW_TEXT_MAX]


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC with millisecond precision and a ``Z`` suffix (every event's default ``ts``:
    the date and time are formatted once a second, the milliseconds each call)."""
    global _second  # one (second, text) pair, replaced whole: safe across threads
    now = time.time()
    whole = int(now)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1000):03d}Z"


_second: tuple[int, str] = (-1, "")


def new_run_id(now: datetime | None = None) -> str:
    """A fresh ``run_YYYYMMDD_HHMMSS_<8 hex>`` identifier."""
    now = now or datetime.now(timezone.utc)
    return f"run_{now:%Y%m%d_%H%M%S}_{secrets.token_hex(4)}"


def is_run_id(value: object) -> bool:
    """True when ``value`` is a well-formed run id (safe to use as a folder name)."""
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def check_usage_delta(
    value: dict[str, float | int | None], count_max: int = MAX_DELTA, cost_max: float = MAX_COST_USD
) -> dict[str, float | int | None]:
    """``value`` when it is a valid usage delta (known names, counts in 0..``count_max``, a finite cost in
    0..``cost_max`` or null); else ValueError naming the bad entry."""
    for name, delta in value.items():
        if name not in USAGE_NAMES:
            raise ValueError(f"unknown usage field {name!r}; known: {', '.join(USAGE_NAMES)}")
        if name == COST_FIELD:
            if delta is not None and not within(delta, cost_max):
                shown = repr(delta)[:40]
                raise ValueError(f"{COST_FIELD} delta must be a finite number in 0..{cost_max:g} or null, got {shown}")
        else:
            check_count(f"usage {name!r}", delta, count_max)
    return value


def within(value: float, maximum: float) -> bool:
    """True when ``value`` is a finite number in 0..``maximum`` (an int too large for a float is not)."""
    try:
        return math.isfinite(value) and 0 <= value <= maximum
    except OverflowError:
        return False


def check_count(what: str, value: object, maximum: int = MAX_DELTA) -> None:
    """ValueError unless ``value`` is an int in 0..``maximum``."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        shown = f"{value!r}" if not isinstance(value, int) or abs(value) < 10**30 else f"a {value.bit_length()}-bit int"
        raise ValueError(f"{what} delta must be an int in 0..{maximum}, got {shown}")


def checked_paths(value: list[str], *, already_clean: bool = False) -> list[str]:
    """An event's artifact paths when each is relative, without ``..`` and short enough (ValueError
    otherwise), their secrets made markers unless ``already_clean``."""
    if len(value) > ARTIFACT_PATHS_MAX:
        raise ValueError(f"{len(value)} artifact paths; at most {ARTIFACT_PATHS_MAX} are accepted")
    for path in value:
        if not _ARTIFACT_RE.fullmatch(path):
            # The refusal is logged and counted: it must not carry what the path may hide.
            shown = repr(clean(path, 80)) if len(path) <= ARTIFACT_PATH_MAX else f"of {len(path)} chars"
            limit = f"{ARTIFACT_PATH_MAX} chars at most"
            raise ValueError(f"artifact path {shown} must be relative, without '..', {limit}")
    if already_clean or not value:
        return value
    # A secret in a path (data/sk-proj-..., the daemon's own key) becomes a marker, so the event and the
    # rest of its paths are kept; a marker is a file-name part, so the path stays a relative one.
    redacted = [redact_path(path) for path in value]
    return [path if _ARTIFACT_RE.fullmatch(path) else _REDACTED_PATH for path in redacted]


def trusted_event(record: dict[str, Any]) -> Event:
    """The :class:`Event` of a record this process checked, or that the supervisor signed, without
    validating it again (what ``model_construct`` builds, without its per-field loop: the hot path of
    the supervisor and of every viewer). ``record`` holds every field, but perhaps ``error``."""
    event = _new_event(Event)
    _set(event, "__dict__", {**record, "error": None} if "error" not in record else dict(record))
    _set_fields_set(event, set(record))
    _set_extra(event, None)
    _set_private(event, None)
    return event


# The model's slots, set as model_construct sets them (a frozen model refuses its own __setattr__).
_new_event = BaseModel.__new__
_set = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


class Event(BaseModel):
    """One v1.0 event, exactly as written to ``events.jsonl`` and published to viewers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_version: Literal["1.0"] = "1.0"
    ts: str = Field(default_factory=utc_now_iso)
    run_id: str
    round: int = Field(default=0, ge=0, le=100_000)
    stage: Stage
    level: Level = "info"
    event_type: EventType
    message: str = ""
    counters_delta: dict[str, int] = Field(default_factory=dict)
    usage_delta: dict[str, float | int | None] = Field(default_factory=dict)
    artifact_paths: list[str] = Field(default_factory=list)
    error: str | None = None

    @field_validator("ts")
    @classmethod
    def _check_ts(cls, value: str) -> str:
        if not _TS_RE.fullmatch(value):
            raise ValueError("must be ISO 8601 UTC ending in Z, e.g. 2024-02-15T12:34:56.789Z")
        return value

    @field_validator("run_id")
    @classmethod
    def _check_run_id(cls, value: str) -> str:
        if not RUN_ID_RE.fullmatch(value):
            raise ValueError("must match run_YYYYMMDD_HHMMSS_<8 hex>")
        return value

    @field_validator("message")
    @classmethod
    def _clean_message(cls, value: str, info: ValidationInfo) -> str:
        if _already_clean(info) and len(value) <= MESSAGE_MAX:
            return value
        _check_raw_length("message", value)
        return clean(value, MESSAGE_MAX)

    @field_validator("error")
    @classmethod
    def _clean_error(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (_already_clean(info) and len(value) <= ERROR_MAX):
            return value
        _check_raw_length("error", value)
        return clean(value, ERROR_MAX)

    @field_validator("counters_delta")
    @classmethod
    def _check_counters(cls, value: dict[str, int]) -> dict[str, int]:
        for name, delta in value.items():
            if name not in COUNTER_NAMES:
                raise ValueError(f"unknown counter {name!r}; known: {', '.join(COUNTER_NAMES)}")
            if not 0 <= delta <= MAX_DELTA:  # strict: an int already (the hot path: no call when it fits)
                check_count(f"counter {name!r}", delta)
        return value

    @field_validator("usage_delta")
    @classmethod
    def _check_usage(cls, value: dict[str, float | int | None]) -> dict[str, float | int | None]:
        return check_usage_delta(value)

    @field_validator("artifact_paths")
    @classmethod
    def _check_paths(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return checked_paths(value, already_clean=_already_clean(info))

    @model_validator(mode="after")
    def _error_only_on_error_level(self) -> Event:
        if self.error is not None and self.level != "error":
            raise ValueError("error may be set only when level is 'error'")
        return self

    def to_record(self) -> dict[str, Any]:
        """The event as the plain dict written to disk: ``error`` only when set."""
        # The fields are plain values (strict schema): a copy of the model's own dict, its containers
        # copied too, is what model_dump returns, in a fraction of the time (the supervisor's hot path).
        record = dict(self.__dict__)
        record["counters_delta"] = dict(self.counters_delta)
        record["usage_delta"] = dict(self.usage_delta)
        record["artifact_paths"] = list(self.artifact_paths)
        if record["error"] is None:
            del record["error"]
        return record
