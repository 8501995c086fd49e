"""The strict AutoTrain configuration: its schema, its checks and the wording of their messages (the
sources it is read from are :mod:`heidi_engine.bus.config.sources`).

Sources, lowest to highest precedence: schema defaults, ``config.yaml``, environment variables named
``AUTOTRAIN_`` + the field (``AUTOTRAIN_ROUNDS=2``; a bare ``ROUNDS`` or ``SEED`` left in a shell changes
nothing), explicit overrides (``--set KEY=VALUE``, ``--rounds N``). YAML values are typed
strictly (``ROUNDS: "5"`` is an error, bools are never numbers); environment and command-line values are
strings and are parsed per field type. Every problem of every source is collected, one line each, naming
the source, the field, the value and the rule (``config.yaml: ROUNDS = 0: must be >= 1 (range 1–100)``),
so a user fixes everything in one pass. A bad value in a lower source is reported even when a higher one
overrides it: the file would break the next run that lacks the override.

No secret is ever part of the config: the teacher's key is read from the environment variable *named* by
``TEACHER_API_KEY_ENV``, and values that look like credentials are never echoed in errors.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import ErrorDetails

from heidi_engine.bus.config import yaml_file as _config_yaml
from heidi_engine.bus.redaction import clean, redact, scan

__all__ = ["ENV_PREFIX", "FIELD_NAMES", "SEED_FIELDS", "SUPERVISOR_START_FIELDS", "WORK_SIZE_FIELDS",
           "AutoTrainConfig", "ConfigError", "field_rule", "start_only_problems"]

ENV_PREFIX = "AUTOTRAIN_"

_VALUE_MAX = 60
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Beyond the redaction rules' known key shapes: any userinfo in a URL (a bare token too) and long random
# runs. A false positive only hides, in an error line, a value the user typed themselves.
_SECRETISH = re.compile(r"://[^/\s@]+@|(?=[\w-]*[0-9])(?=[\w-]*[A-Za-z])\b[A-Za-z0-9_-]{32,}")
# An environment variable name in mixed case with digits and this long is a pasted key, not a name.
_KEY_LIKE_NAME = re.compile(r"(?=.*[a-z])(?=.*[0-9]).{24,}")
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@]+@")
_SECRET_KEY_NAME = re.compile(r"(?i)api_?key|token|secret|passw")


class ConfigError(Exception):
    """Invalid configuration. ``problems`` holds one line per problem; ``str()`` joins them."""

    def __init__(self, problems: Iterable[str] | str) -> None:
        # A plain string is split back into lines, which is also how a pickled error is rebuilt.
        lines = problems.splitlines() if isinstance(problems, str) else problems
        # One problem per line is the contract; a stray newline inside a message would break it.
        self.problems: list[str] = [" ".join(p.splitlines()) for p in lines]
        super().__init__("\n".join(self.problems))


class AutoTrainConfig(BaseModel):
    """The effective configuration of one run; frozen, strictly typed, unknown keys refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False
    )

    # The seed's table: its names, defaults and ranges are requirements.
    BASE_MODEL: str = Field(
        "mistralai/Mistral-7B-Instruct-v0.2",
        description="Student to fine-tune: hub id, local path or smollm2-135m-instruct.",
    )
    TEACHER_MODEL: str = Field(
        "gpt-4o-mini", description="Teacher: a chat-completions model, or local:<model> in-process."
    )
    SAMPLES_PER_ROUND: int = Field(50, ge=1, le=10000, description="Samples the teacher generates per round.")
    ROUNDS: int = Field(3, ge=1, le=100, description="Number of generate/validate/train/eval rounds.")
    VAL_RATIO: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of the task pool held out for the whole run (val rows, never trained on)."
    )
    SEQ_LEN: int = Field(2048, ge=128, le=8192, description="Maximum training sequence length, in tokens.")
    BATCH_SIZE: int = Field(1, ge=1, le=64, description="Per-device training batch size.")
    GRAD_ACCUM: int = Field(8, ge=1, le=128, description="Gradient accumulation steps per optimizer step.")
    TRAIN_STEPS: int = Field(500, ge=1, le=100000, description="Optimizer steps per training round.")
    LORA_R: int = Field(64, ge=1, le=512, description="LoRA rank.")
    RUN_UNIT_TESTS: Literal["0", "1"] = Field(
        "0", description='"1" runs generated code through the unit-test gate.'
    )
    # Teacher.
    TEACHER_BASE_URL: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible API; several, comma-separated, make a pool "
        "(each request to the one with the fewest in flight).",
    )
    TEACHER_API_KEY_ENV: str = Field(
        "OPENAI_API_KEY", description="NAME of the environment variable that holds the teacher's API key."
    )
    TEACHER_CONCURRENCY: int = Field(
        4, ge=1, le=256, description="Teacher requests in flight at once (a local: teacher: prompts per batch)."
    )
    TEACHER_MAX_RETRIES: int = Field(
        5, ge=0, le=20, description="Retries per teacher request (Retry-After honoured)."
    )
    TEACHER_TIMEOUT_S: float = Field(
        60.0, ge=1, le=600, description="Deadline of one teacher request, connect to last byte, in seconds."
    )
    TEACHER_RETRY_BUDGET_S: float = Field(
        120.0, ge=0, le=3600, description="Longest total wait between retries of one teacher request, in seconds."
    )
    TEACHER_PARK_INTERVAL_S: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="While the teacher is unreachable past its retries, seconds between probe requests.",
    )
    TEACHER_STREAM: Literal["0", "1"] = Field(
        "0", description="1 = stream teacher replies (time to first token and tokens/s are measured)."
    )
    TEACHER_MAX_TOKENS: int = Field(512, ge=16, le=8192, description="Maximum tokens per teacher reply.")
    TEACHER_TEMPERATURE: float = Field(0.7, ge=0.0, le=2.0, description="Teacher sampling temperature.")
    MAX_COST_USD: float | None = Field(
        None, ge=0,
        description="Ceiling on the estimated teacher cost: a request is sent only while its worst case still "
        "fits; empty = no budget.",
    )
    # Student training.
    LORA_ALPHA: int = Field(
        128, ge=1, le=1024, description="LoRA alpha: the update is scaled by LORA_ALPHA / LORA_R (2 by default)."
    )
    LORA_DROPOUT: float = Field(0.05, ge=0.0, le=0.9, description="LoRA dropout.")
    LEARNING_RATE: float = Field(2e-4, gt=0, le=1, description="Optimizer learning rate.")
    SEED: int = Field(42, ge=0, le=2**32 - 1, description="Random seed for sampling, splits and training.")
    LORA_TARGET_MODULES: Literal["attention", "all-linear"] = Field(
        "attention",
        description='LoRA on the attention projections, or on "all-linear" layers (better quality, more memory).',
    )
    GRADIENT_CHECKPOINTING: Literal["auto", "0", "1"] = Field(
        "auto", description='Recompute activations to save memory; "auto": on from 1B parameters.'
    )
    LOAD_IN_4BIT: Literal["0", "1"] = Field(
        "0", description='"1": QLoRA, the base model in 4 bits through bitsandbytes (needs a CUDA GPU).'
    )
    TRAIN_NPROC: int = Field(
        1, ge=1, le=64, description="Training processes on this machine (one per GPU); over 1 runs a launcher."
    )
    TRAIN_LAUNCHER: Literal["auto", "torchrun", "accelerate"] = Field(
        "auto", description='What starts TRAIN_NPROC > 1 processes; "auto" is torchrun.'
    )
    CHECKPOINT_EVERY: int = Field(
        10, ge=1, le=100000, description="Trainer checkpoint interval, in optimizer steps."
    )
    # Data and evaluation.
    TASK_SOURCE: str = Field(
        "bank", description='Prompts from "bank", "self-instruct" or "file:<path>.jsonl".'
    )
    TASK_DIFFICULTY: Literal["any", "easy", "medium", "hard", "easy,medium", "medium,hard"] = Field(
        "any", description="Which tasks of the pool to use, by their difficulty."
    )
    EVAL_SAMPLES: int = Field(20, ge=1, le=10000, description="Held-out tasks evaluated after each round.")
    EVAL_BATCH_SIZE: int = Field(
        8, ge=1, le=256, description="Prompts eval answers at once (base and adapter in one greedy batch)."
    )
    REPORT_TO: Literal["none", "tensorboard", "mlflow", "wandb"] = Field(
        "none",
        description="Tracker for the trainer's curves and the eval results (HF report_to); "
        "tensorboard writes runs/<id>/tracking/.",
    )
    # Supervisor and runtime.
    HTTP_PORT: int = Field(7779, ge=1024, le=65535, description="Port of the HTTP status server (127.0.0.1).")
    HTTP_ENABLED: Literal["0", "1"] = Field(
        "0", description='"1": the supervisor starts the HTTP status server.'
    )
    HTTP_CONTROL: Literal["0", "1"] = Field(
        "0",
        description='"1": the HTTP server\'s browser page may pause, resume and stop the run, for whoever opens '
        "the URL with its token (in http.log and http_control.token).",
    )
    EVENT_LOG_MAX_SIZE_MB: float = Field(
        100.0, gt=0, le=10000, description="Rotate events.jsonl at this size (MB)."
    )
    EVENT_LOG_RETENTION: int = Field(5, ge=1, le=100, description="Rotated event logs kept.")
    AGENT_MAX_RESTARTS: int = Field(
        3, ge=0, le=20, description="Restarts of a crashed agent before the run fails."
    )
    AGENT_HEARTBEAT_TIMEOUT_S: float = Field(
        60.0, ge=5, le=3600, description="An agent silent this long is hung."
    )
    STOP_GRACE_S: float = Field(10.0, ge=0.5, le=600, description="Seconds between SIGTERM and SIGKILL.")
    GPU_SAMPLE_INTERVAL_S: float = Field(2.0, ge=0.2, le=60, description="Seconds between GPU/host samples.")
    SANDBOX_TIMEOUT_S: float = Field(
        10.0, ge=1, le=600, description="Wall-clock limit of one sandboxed test (s)."
    )
    SANDBOX_MEMORY_MB: int = Field(
        1024, ge=64, le=65536, description="Memory limit of one sandboxed test run, all its processes (MB)."
    )
    SANDBOX: Literal["auto", "bwrap", "namespaces", "none"] = Field(
        "auto",
        description='Sandbox of generated code: "auto" (bwrap, else namespaces as root, else refuse), '
        '"bwrap", "namespaces" (root) or "none" (unconfined).',
    )

    @field_validator("BASE_MODEL", "TEACHER_MODEL")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not value or value != value.strip() or value == "local:":
            raise ValueError("expected a model name: non-empty, no leading or trailing spaces")
        return value

    @field_validator("TEACHER_BASE_URL")
    @classmethod
    def _check_url(cls, value: str) -> str:
        problem = "expected an http:// or https:// URL with a host, e.g. https://api.openai.com/v1"
        items = value.split(",")
        seen: set[tuple[str, str, int | None, str]] = set()
        for number, item in enumerate(items, 1):
            url = item.strip()
            where = f"endpoint {number} of {len(items)} ({clean(url, 120)!r}): " if len(items) > 1 else ""
            try:
                parts = urlsplit(url)
                port = parts.port  # raises on a malformed port
            except ValueError:
                raise ValueError(where + problem) from None
            if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
                raise ValueError(where + problem)
            key = (parts.scheme, parts.hostname, port, parts.path.rstrip("/"))
            if key in seen:
                raise ValueError(where + "listed twice; each server of a pool once")
            seen.add(key)
        return value

    @field_validator("TEACHER_API_KEY_ENV")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value) or scan(value) or _KEY_LIKE_NAME.fullmatch(value):
            raise ValueError(
                "expected the NAME of the environment variable holding the key (e.g. OPENAI_API_KEY),"
                " never the key itself"
            )
        return value

    @field_validator("TASK_SOURCE")
    @classmethod
    def _check_task_source(cls, value: str) -> str:
        if value in ("bank", "self-instruct"):
            return value
        if value.startswith("file:") and value[5:].strip() and value.lower().endswith(".jsonl"):
            return value
        raise ValueError('expected "bank", "self-instruct" or "file:<path to a .jsonl file>"')

    @field_validator("MAX_COST_USD", mode="before")
    @classmethod
    def _empty_is_no_budget(cls, value: object) -> object:
        return None if value == "" else value

    def redacted_dict(self) -> dict[str, object]:
        """The effective config as a plain dict (for config.json and dashboards), URL credentials hidden."""
        return {key: _redact(value) for key, value in self.model_dump().items()}

    def teacher_api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The teacher's API key from the variable named by TEACHER_API_KEY_ENV; None when unset or empty."""
        source = os.environ if env is None else env
        return source.get(self.TEACHER_API_KEY_ENV) or None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # The repr ends up in logs and tracebacks, so it is redacted like config.json.
        for key, value in super().__repr_args__():
            yield key, _redact(value)


FIELD_NAMES: tuple[str, ...] = tuple(AutoTrainConfig.model_fields)
SEED_FIELDS: tuple[str, ...] = (
    "BASE_MODEL", "TEACHER_MODEL", "SAMPLES_PER_ROUND", "ROUNDS", "VAL_RATIO",
    "SEQ_LEN", "LORA_R", "GRAD_ACCUM", "TRAIN_STEPS", "RUN_UNIT_TESTS",
)  # fmt: skip
# What a remote operator may override when it starts a run: fields that size the work, and nothing that
# says where code runs, where secrets go or how much may be spent (the teacher's URL, model and key
# variable, BASE_MODEL, SANDBOX*, RUN_UNIT_TESTS, TASK_SOURCE, MAX_COST_USD, trackers, HTTP, logs, agents).
WORK_SIZE_FIELDS: frozenset[str] = frozenset({
    "ROUNDS", "SAMPLES_PER_ROUND", "TRAIN_STEPS", "BATCH_SIZE", "GRAD_ACCUM", "SEQ_LEN", "LEARNING_RATE",
    "LORA_R", "LORA_ALPHA", "LORA_DROPOUT", "LORA_TARGET_MODULES", "VAL_RATIO", "EVAL_SAMPLES", "EVAL_BATCH_SIZE",
    "SEED", "TEACHER_MAX_TOKENS", "TEACHER_TEMPERATURE", "TASK_DIFFICULTY", "GRADIENT_CHECKPOINTING",
    "CHECKPOINT_EVERY",
})  # fmt: skip
# Read once, when the supervisor starts (supervisor/cli.py), and by no run: a start's override of one would
# be accepted and change nothing, so it is refused. Each with what serves the need at once, if anything does.
SUPERVISOR_START_FIELDS: dict[str, str] = {
    "HTTP_ENABLED": "autotrain-menu --http serves the status now, beside this supervisor",
    "HTTP_PORT": "autotrain-menu --http --port N serves the status on another port now",
    "HTTP_CONTROL": "autotrain-menu --http --control serves a page that may steer the run now",
}


def start_only_problems(fields: Iterable[object]) -> list[str]:
    """One line for each of ``fields`` (a start's overrides) that only a supervisor's start reads: how to set it."""
    return [
        f"{name} is read when the supervisor starts, not by a run: set it in config.yaml or {ENV_PREFIX}{name} "
        f"and restart the supervisor ({SUPERVISOR_START_FIELDS[name]})"
        for name in sorted({str(field)[:64] for field in fields} & SUPERVISOR_START_FIELDS.keys())
    ]


_TEXT_RULES: dict[str, str] = {
    "BASE_MODEL": "model name or path",
    "TEACHER_MODEL": "model name, or local:<model>",
    "TEACHER_BASE_URL": "http(s) URL, or several comma-separated",
    "TEACHER_API_KEY_ENV": "environment variable name",
    "TASK_SOURCE": '"bank", "self-instruct" or "file:<path>.jsonl"',
}
_BOUND_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_ERROR_BOUNDS = {"greater_than_equal": "ge", "greater_than": "gt", "less_than_equal": "le", "less_than": "lt"}


def _redact(value: object) -> object:
    return redact(_URL_USERINFO.sub("[REDACTED]@", value)) if isinstance(value, str) else value


def _kind(name: str) -> str:
    """'int', 'float', 'optional_float' or 'text': how a string from env or the command line is parsed."""
    annotation = AutoTrainConfig.model_fields[name].annotation
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "optional_float" if float in get_args(annotation) else "text"


def _bounds(name: str) -> dict[str, object]:
    bounds: dict[str, object] = {}
    for item in AutoTrainConfig.model_fields[name].metadata:
        for key in _BOUND_OPS:
            if isinstance(item, getattr(annotated_types, key.capitalize())):
                bounds[key] = getattr(item, key)
    return bounds


def _unknown(prefix: str, key: str) -> str:
    shown = key if _ENV_NAME.fullmatch(key) and len(key) <= _VALUE_MAX else _show("", key)
    guess = difflib.get_close_matches(key.upper(), FIELD_NAMES, n=1, cutoff=0.6)
    hints = [f"did you mean {guess[0]}?"] if guess else []
    if _SECRET_KEY_NAME.search(key):
        hints.append(
            "secrets never go in the config: export the key in the variable named by TEACHER_API_KEY_ENV"
        )
    return f"{prefix}{shown}: unknown field" + (f" ({' '.join(hints)})" if hints else "")


def _field_known(name: str) -> None:
    if name not in AutoTrainConfig.model_fields:
        raise ConfigError([_unknown("", name)])


def field_rule(name: str) -> str:
    """A short human rule for one field, e.g. ``integer 1–100`` or ``"0" or "1"``."""
    _field_known(name)
    kind = _kind(name)
    if kind == "text":
        choices = get_args(AutoTrainConfig.model_fields[name].annotation)
        return " or ".join(f'"{c}"' for c in choices) if choices else _TEXT_RULES.get(name, "text")
    noun = "integer" if kind == "int" else "number"
    bounds = _bounds(name)
    if "ge" in bounds and "le" in bounds:
        rule = f"{noun} {bounds['ge']}–{bounds['le']}"
    else:
        rule = noun + " and".join(f" {_BOUND_OPS[k]} {v}" for k, v in bounds.items())
    return f"empty or {rule}" if kind == "optional_float" else rule


def _show(name: str, value: object) -> str:
    text = repr(value)
    if name == "TEACHER_API_KEY_ENV" or _SECRETISH.search(text) or scan(text):
        return "<hidden>"
    return text if len(text) <= _VALUE_MAX else text[: _VALUE_MAX - 3] + "..."


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }
    return "nothing (an empty value)" if value is None else names.get(type(value), type(value).__name__)


def _from_text(name: str, raw: str) -> object:
    """Parse an environment or command-line string per the field's type; ValueError says what it is not."""
    kind, text = _kind(name), raw.strip()
    if kind == "text":
        return raw
    if kind == "optional_float" and not text:
        return None
    if kind == "int":
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError("not an integer")
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


_YES_NO = {"yes", "no", "y", "n", "on", "off", "true", "false"}


def _type_hint(name: str, value: object) -> str:
    """How to write the value instead, for the YAML slips people actually make."""
    kind = _kind(name)
    if isinstance(value, str) and kind != "text":
        try:
            parsed = _from_text(name, value)
        except ValueError:
            return ""
        return f" (YAML reads it as text; write {_config_yaml.yaml_scalar(parsed)})"
    choices = get_args(AutoTrainConfig.model_fields[name].annotation)
    if kind == "text" and isinstance(value, bool | int) and str(int(value)) in choices:
        return f' (quote it: "{int(value)}")'
    if kind == "text" and isinstance(value, str) and value.lower() in _YES_NO and {"0", "1"} <= set(choices):
        return ' (write "1" for yes or "0" for no, quoted)'
    return ""


def _reason(name: str, error: ErrorDetails) -> str:
    value, rule = error["input"], field_rule(name)
    bound_key = _ERROR_BOUNDS.get(error["type"])
    if bound_key is not None:
        bounds = _bounds(name)
        scope = f"range {bounds['ge']}–{bounds['le']}" if {"ge", "le"} <= bounds.keys() else f"rule: {rule}"
        return f"must be {_BOUND_OPS[bound_key]} {bounds[bound_key]} ({scope})"
    if error["type"] == "finite_number":
        return f"must be a finite number ({rule})"
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return f"expected {rule}, got {_type_name(value)}{_type_hint(name, value)}"


def _line(source: str, name: str, value: object, reason: str) -> str:
    shown_name = ENV_PREFIX + name if source == "environment" else name
    return f"{source + ': ' if source else ''}{shown_name} = {_show(name, value)}: {reason}"
