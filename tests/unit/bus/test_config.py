"""The strict configuration: every field's rule, the four sources and their order, the error lines,
the shipped config.yaml, the comment-preserving updater and the generated reference table.

The expected schema below is restated from the product's configuration table, not read from the model, so
that a drifting default or range fails here.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from ruamel.yaml import YAML

from heidi_engine.bus.config import (
    FIELD_NAMES,
    SEED_FIELDS,
    AutoTrainConfig,
    ConfigError,
    config_reference_markdown,
    env_overrides,
    field_rule,
    load_config,
    parse_override,
    validate_field,
    value_sources,
)

REPO = Path(__file__).resolve().parents[3]

# name: (type, default, low, high); every bound inclusive.
RANGED: dict[str, tuple[type, float, float, float]] = {
    "SAMPLES_PER_ROUND": (int, 50, 1, 10000),
    "ROUNDS": (int, 3, 1, 100),
    "VAL_RATIO": (float, 0.1, 0.0, 1.0),
    "SEQ_LEN": (int, 2048, 128, 8192),
    "BATCH_SIZE": (int, 1, 1, 64),
    "GRAD_ACCUM": (int, 8, 1, 128),
    "TRAIN_STEPS": (int, 500, 1, 100000),
    "LORA_R": (int, 64, 1, 512),
    "TEACHER_CONCURRENCY": (int, 4, 1, 256),
    "TEACHER_MAX_RETRIES": (int, 5, 0, 20),
    "TEACHER_TIMEOUT_S": (float, 60.0, 1, 600),
    "TEACHER_RETRY_BUDGET_S": (float, 120.0, 0, 3600),
    "TEACHER_PARK_INTERVAL_S": (float, 30.0, 1, 3600),
    "TEACHER_MAX_TOKENS": (int, 512, 16, 8192),
    "TEACHER_TEMPERATURE": (float, 0.7, 0.0, 2.0),
    "LORA_ALPHA": (int, 128, 1, 1024),
    "TRAIN_NPROC": (int, 1, 1, 64),
    "LORA_DROPOUT": (float, 0.05, 0.0, 0.9),
    "SEED": (int, 42, 0, 2**32 - 1),
    "HTTP_PORT": (int, 7779, 1024, 65535),
    "EVAL_SAMPLES": (int, 20, 1, 10000),
    "EVAL_BATCH_SIZE": (int, 8, 1, 256),
    "CHECKPOINT_EVERY": (int, 10, 1, 100000),
    "EVENT_LOG_RETENTION": (int, 5, 1, 100),
    "AGENT_MAX_RESTARTS": (int, 3, 0, 20),
    "AGENT_HEARTBEAT_TIMEOUT_S": (float, 60.0, 5, 3600),
    "STOP_GRACE_S": (float, 10.0, 0.5, 600),
    "GPU_SAMPLE_INTERVAL_S": (float, 2.0, 0.2, 60),
    "SANDBOX_TIMEOUT_S": (float, 10.0, 1, 600),
    "SANDBOX_MEMORY_MB": (int, 1024, 64, 65536),
}
# name: (default, high); the low bound is exclusive 0.
ABOVE_ZERO: dict[str, tuple[float, float]] = {
    "LEARNING_RATE": (2e-4, 1),
    "EVENT_LOG_MAX_SIZE_MB": (100.0, 10000),
}
TEXT_DEFAULTS: dict[str, str] = {
    "BASE_MODEL": "mistralai/Mistral-7B-Instruct-v0.2",
    "TEACHER_MODEL": "gpt-4o-mini",
    "TEACHER_BASE_URL": "https://api.openai.com/v1",
    "TEACHER_API_KEY_ENV": "OPENAI_API_KEY",
    "TASK_SOURCE": "bank",
    "TASK_DIFFICULTY": "any",
    "REPORT_TO": "none",
    "RUN_UNIT_TESTS": "0",
    "HTTP_ENABLED": "0",
    "HTTP_CONTROL": "0",
    "TEACHER_STREAM": "0",
    "SANDBOX": "auto",
    "LORA_TARGET_MODULES": "attention",
    "GRADIENT_CHECKPOINTING": "auto",
    "LOAD_IN_4BIT": "0",
    "TRAIN_LAUNCHER": "auto",
}
SWITCHES = ("RUN_UNIT_TESTS", "HTTP_ENABLED", "HTTP_CONTROL", "TEACHER_STREAM", "LOAD_IN_4BIT")


def _dump(values: dict[str, object]) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(values, out)
    return out.getvalue()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(
    path: Path | None, env: dict[str, str] | None = None, overrides: dict[str, object] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env, overrides=overrides)
    assert str(info.value) == "\n".join(info.value.problems)
    assert all("\n" not in p for p in info.value.problems)
    return info.value.problems


def yaml_problems(tmp_path: Path, values: dict[str, Any]) -> list[str]:
    return problems_of(write(tmp_path, _dump(values)))


# --- the schema ---


def test_schema_has_exactly_the_specified_fields_and_defaults() -> None:
    assert set(FIELD_NAMES) == set(RANGED) | set(ABOVE_ZERO) | set(TEXT_DEFAULTS) | {"MAX_COST_USD"}
    config = AutoTrainConfig()
    for name, (kind, default, _, _) in RANGED.items():
        assert getattr(config, name) == default and type(getattr(config, name)) is kind, name
    for name, (default, _) in ABOVE_ZERO.items():
        assert getattr(config, name) == default, name
    for name, text in TEXT_DEFAULTS.items():
        assert getattr(config, name) == text, name
    assert config.MAX_COST_USD is None
    assert FIELD_NAMES[:11] == (
        "BASE_MODEL", "TEACHER_MODEL", "SAMPLES_PER_ROUND", "ROUNDS", "VAL_RATIO",
        "SEQ_LEN", "BATCH_SIZE", "GRAD_ACCUM", "TRAIN_STEPS", "LORA_R", "RUN_UNIT_TESTS",
    )  # fmt: skip


def test_seed_fields_are_the_menus_ten() -> None:
    assert SEED_FIELDS == (
        "BASE_MODEL", "TEACHER_MODEL", "SAMPLES_PER_ROUND", "ROUNDS", "VAL_RATIO",
        "SEQ_LEN", "LORA_R", "GRAD_ACCUM", "TRAIN_STEPS", "RUN_UNIT_TESTS",
    )  # fmt: skip
    assert set(SEED_FIELDS) <= set(FIELD_NAMES)


def test_model_is_frozen_strict_and_closed() -> None:
    config = AutoTrainConfig()
    with pytest.raises(ValidationError):
        config.ROUNDS = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        AutoTrainConfig(FOO=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AutoTrainConfig(ROUNDS="5")  # type: ignore[arg-type]


def test_every_field_has_a_description_and_a_rule() -> None:
    for name in FIELD_NAMES:
        assert AutoTrainConfig.model_fields[name].description, name
        assert field_rule(name), name


@pytest.mark.parametrize("name", sorted(RANGED))
def test_ranged_field_bounds_on_both_sides(tmp_path: Path, name: str) -> None:
    kind, _, low, high = RANGED[name]
    config = load_config(write(tmp_path, _dump({name: kind(low)})), env={})
    assert getattr(config, name) == low
    config = load_config(write(tmp_path, _dump({name: kind(high)})), env={})
    assert getattr(config, name) == high
    step = 1 if kind is int else 1e-6
    (below,) = yaml_problems(tmp_path, {name: kind(low - step)})
    assert below.startswith(f"{tmp_path / 'config.yaml'}: {name} = ")
    assert f"must be >= {low}" in below and f"range {low}–{high}" in below
    (above,) = yaml_problems(tmp_path, {name: kind(high + step)})
    assert f": {name} = " in above and f"must be <= {high}" in above


@pytest.mark.parametrize("name", sorted(ABOVE_ZERO))
def test_exclusive_zero_fields(tmp_path: Path, name: str) -> None:
    _, high = ABOVE_ZERO[name]
    assert getattr(load_config(write(tmp_path, f"{name}: {high}\n"), env={}), name) == high
    assert getattr(load_config(write(tmp_path, f"{name}: 0.001\n"), env={}), name) == 0.001
    (zero,) = yaml_problems(tmp_path, {name: 0.0})
    assert f"{name} = 0.0: must be > 0" in zero
    (above,) = yaml_problems(tmp_path, {name: high * 1.5})
    assert f"must be <= {high}" in above


def test_max_cost_is_empty_or_non_negative(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "MAX_COST_USD:\n"), env={}).MAX_COST_USD is None
    assert load_config(write(tmp_path, 'MAX_COST_USD: ""\n'), env={}).MAX_COST_USD is None
    assert load_config(write(tmp_path, "MAX_COST_USD: 0\n"), env={}).MAX_COST_USD == 0.0
    assert load_config(write(tmp_path, "MAX_COST_USD: 2.5\n"), env={}).MAX_COST_USD == 2.5
    (negative,) = yaml_problems(tmp_path, {"MAX_COST_USD": -1})
    assert "MAX_COST_USD = -1: must be >= 0" in negative
    assert "expected empty or number >= 0" in yaml_problems(tmp_path, {"MAX_COST_USD": "lots"})[0]


@pytest.mark.parametrize("name", sorted(RANGED))
def test_yaml_strings_and_bools_are_not_numbers(tmp_path: Path, name: str) -> None:
    kind, default, _, _ = RANGED[name]
    (quoted,) = yaml_problems(tmp_path, {name: str(default)})
    assert f"{name} = {str(default)!r}: expected {field_rule(name)}, got text" in quoted
    assert "YAML reads it as text" in quoted
    (boolean,) = yaml_problems(tmp_path, {name: True})
    assert f"{name} = True: expected" in boolean and "got a boolean" in boolean
    if kind is int:
        (fractional,) = yaml_problems(tmp_path, {name: float(default)})
        assert "got a number" in fractional
    else:  # a YAML integer is a fine float
        assert getattr(
            load_config(write(tmp_path, f"{name}: {int(RANGED[name][3])}\n"), env={}), name
        ) == int(RANGED[name][3])


def test_a_quoted_number_is_explained(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "LEARNING_RATE: '2e-4'\n"))
    assert "LEARNING_RATE = '2e-4'" in problem and "write 0.0002" in problem


@pytest.mark.parametrize("name", SWITCHES)
def test_switches_take_exactly_the_strings_0_and_1(tmp_path: Path, name: str) -> None:
    assert getattr(load_config(write(tmp_path, f'{name}: "1"\n'), env={}), name) == "1"
    assert getattr(load_config(write(tmp_path, f"{name}: '0'\n"), env={}), name) == "0"
    (unquoted,) = problems_of(write(tmp_path, f"{name}: 1\n"))
    assert f'{name} = 1: expected "0" or "1", got an integer (quote it: "1")' in unquoted
    (yes,) = problems_of(write(tmp_path, f"{name}: yes\n"))  # YAML 1.2: a word, not a boolean
    assert "got text" in yes and 'write "1" for yes' in yes
    (true,) = problems_of(write(tmp_path, f"{name}: true\n"))
    assert "got a boolean" in true and 'quote it: "1"' in true
    for bad in ("2", "true", " 1", ""):
        assert f"{name} = {bad!r}" in yaml_problems(tmp_path, {name: bad})[0]
    assert validate_field(name, "1") == "1"


def test_text_fields_reject_numbers_and_bad_forms(tmp_path: Path) -> None:
    assert "BASE_MODEL = 7: expected" in problems_of(write(tmp_path, "BASE_MODEL: 7\n"))[0]
    bad = {
        "BASE_MODEL": ["", " padded"],
        "TEACHER_MODEL": ["local:", ""],
        "TEACHER_BASE_URL": ["api.openai.com/v1", "ftp://host/x", "https://", "https://host:99999/v1"],
        "TASK_SOURCE": ["banks", "file:", "file:data.txt", "File:x.jsonl"],
        "TEACHER_API_KEY_ENV": ["1ABC", "MY-KEY", ""],
    }
    for name, values in bad.items():
        for value in values:
            (problem,) = problems_of(None, overrides={name: value})
            assert problem.startswith(f"override: {name} = "), problem
    good = {
        "TEACHER_MODEL": "local:smollm2-135m-instruct",
        "TEACHER_BASE_URL": "http://127.0.0.1:8000/v1",
        "TASK_SOURCE": "file:/data/tasks.jsonl",
        "TEACHER_API_KEY_ENV": "VLLM_KEY",
    }
    config = load_config(env={}, overrides=good)
    assert {k: getattr(config, k) for k in good} == good
    assert load_config(env={}, overrides={"TASK_SOURCE": "self-instruct"}).TASK_SOURCE == "self-instruct"


# --- sources and precedence ---


def test_precedence_defaults_file_environment_override(tmp_path: Path) -> None:
    path = write(tmp_path, "ROUNDS: 2\nSEED: 7\nBASE_MODEL: from-file\n")
    env = {"AUTOTRAIN_ROUNDS": "4", "AUTOTRAIN_SEED": "8"}
    assert load_config(None, env={}).ROUNDS == 3
    assert load_config(path, env={}).ROUNDS == 2
    config = load_config(path, env=env)
    assert (config.ROUNDS, config.SEED, config.BASE_MODEL) == (4, 8, "from-file")
    config = load_config(path, env=env, overrides={"ROUNDS": "6"})
    assert (config.ROUNDS, config.SEED, config.BASE_MODEL) == (6, 8, "from-file")
    assert load_config(path, env=env, overrides={"ROUNDS": 9}).ROUNDS == 9


def test_env_none_reads_os_environ_and_ignores_other_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FIELD_NAMES:
        monkeypatch.delenv("AUTOTRAIN_" + name, raising=False)
    monkeypatch.setenv("AUTOTRAIN_TRAIN_STEPS", "12")
    monkeypatch.setenv("AUTOTRAIN_TRAIN_STEPZ", "not a field")
    monkeypatch.setenv("autotrain_train_steps", "99")
    monkeypatch.setenv("AUTOTRAIN_HOME", "/not/a/field")
    assert load_config().TRAIN_STEPS == 12


def test_only_prefixed_environment_variables_change_a_run() -> None:
    assert load_config(env={"ROUNDS": "7"}).ROUNDS == 3
    assert load_config(env={"AUTOTRAIN_ROUNDS": "7"}).ROUNDS == 7
    # A malformed bare variable (a shell's own SEED, BATCH_SIZE, HTTP_PORT) is not the config's business.
    assert load_config(env={"SEED": "not a seed", "HTTP_PORT": "80", "BATCH_SIZE": "x"}).SEED == 42
    assert env_overrides({"AUTOTRAIN_ROUNDS": "7", "ROUNDS": "9", "AUTOTRAIN_HOME": "/h"}) == {"ROUNDS": "7"}


def test_value_sources_name_the_highest_source_of_each_field(tmp_path: Path) -> None:
    path = write(tmp_path, "ROUNDS: 2\nSEED: 7\nLORA_R: 8\n")
    env = {"AUTOTRAIN_SEED": "8", "AUTOTRAIN_LORA_R": "16", "SEQ_LEN": "256"}
    sources = value_sources(path, env=env, overrides={"LORA_R": "32"})
    assert sources["ROUNDS"] == "file"
    assert sources["SEED"] == "env AUTOTRAIN_SEED"
    assert sources["LORA_R"] == "--set"
    assert sources["SEQ_LEN"] == sources["BASE_MODEL"] == "default"
    assert set(sources) == set(FIELD_NAMES)


def test_environment_strings_are_parsed_per_type() -> None:
    env = {
        "AUTOTRAIN_ROUNDS": " 5 ",
        "AUTOTRAIN_VAL_RATIO": "0.2",
        "AUTOTRAIN_TEACHER_TIMEOUT_S": "30",
        "AUTOTRAIN_MAX_COST_USD": "",
        "AUTOTRAIN_LEARNING_RATE": "1e-5",
        "AUTOTRAIN_RUN_UNIT_TESTS": "1",
        "AUTOTRAIN_BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct",
        "UNRELATED": "x",
    }
    config = load_config(env=env)
    assert (config.ROUNDS, config.VAL_RATIO, config.TEACHER_TIMEOUT_S) == (5, 0.2, 30.0)
    assert (config.MAX_COST_USD, config.LEARNING_RATE, config.RUN_UNIT_TESTS) == (None, 1e-5, "1")
    assert config.BASE_MODEL == "Qwen/Qwen2.5-0.5B-Instruct"
    assert load_config(env={"AUTOTRAIN_MAX_COST_USD": "3"}).MAX_COST_USD == 3.0


def test_environment_values_that_do_not_parse() -> None:
    problems = problems_of(
        None,
        env={
            "AUTOTRAIN_ROUNDS": "abc",
            "AUTOTRAIN_SEQ_LEN": "5.0",
            "AUTOTRAIN_VAL_RATIO": "half",
            "AUTOTRAIN_SEED": "true",
            "AUTOTRAIN_HTTP_PORT": "80",
        },
    )
    assert problems == [
        "environment: AUTOTRAIN_ROUNDS = 'abc': not an integer (rule: integer 1–100)",
        "environment: AUTOTRAIN_SEQ_LEN = '5.0': not an integer (rule: integer 128–8192)",
        "environment: AUTOTRAIN_VAL_RATIO = 'half': not a number (rule: number 0.0–1.0)",
        "environment: AUTOTRAIN_SEED = 'true': not an integer (rule: integer 0–4294967295)",
        "environment: AUTOTRAIN_HTTP_PORT = 80: must be >= 1024 (range 1024–65535)",
    ]
    assert "finite" in problems_of(None, env={"AUTOTRAIN_VAL_RATIO": "nan"})[0]


def test_parse_override() -> None:
    assert parse_override("ROUNDS=2") == ("ROUNDS", "2")
    assert parse_override("BASE_MODEL=a=b") == ("BASE_MODEL", "a=b")
    assert parse_override("MAX_COST_USD=") == ("MAX_COST_USD", "")
    with pytest.raises(ConfigError, match=r"override: 'ROUNDS2': expected KEY=VALUE"):
        parse_override("ROUNDS2")
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        parse_override("=3")
    with pytest.raises(ConfigError, match=r"override: ROUND: unknown field \(did you mean ROUNDS\?\)"):
        parse_override("ROUND=3")


def test_unknown_override_keys_are_errors() -> None:
    assert problems_of(None, overrides={"SAMPLES_PER_RUND": "5"}) == [
        "override: SAMPLES_PER_RUND: unknown field (did you mean SAMPLES_PER_ROUND?)"
    ]


# --- error reporting ---


def test_unknown_yaml_keys_with_and_without_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "ROUNDZ: 3\nrounds: 2\nXYZZY: 1\n")
    assert problems_of(path) == [
        f"{path}: ROUNDZ: unknown field (did you mean ROUNDS?)",
        f"{path}: rounds: unknown field (did you mean ROUNDS?)",
        f"{path}: XYZZY: unknown field",
    ]


def test_a_key_stored_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "sk-proj-" + "a1B2" * 10
    (problem,) = problems_of(write(tmp_path, f"OPENAI_API_KEY: {secret}\n"))
    assert "OPENAI_API_KEY: unknown field" in problem and "TEACHER_API_KEY_ENV" in problem
    (typo,) = problems_of(write(tmp_path, "TEACHER_API_KEY: OPENAI_API_KEY\n"))
    assert "did you mean TEACHER_API_KEY_ENV? secrets never go in the config" in typo
    assert secret not in problem
    (problem,) = problems_of(None, overrides={"TEACHER_API_KEY_ENV": secret})
    assert problem.startswith("override: TEACHER_API_KEY_ENV = <hidden>: ") and secret not in problem
    assert "never the key itself" in problem
    (problem,) = problems_of(None, overrides={"BASE_MODEL": f" {secret}"})
    assert secret not in problem and "<hidden>" in problem
    (problem,) = problems_of(None, overrides={"TEACHER_BASE_URL": "ftp://user:hunter2@host/"})
    assert "hunter2" not in problem


def test_all_problems_are_reported_together_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ROUNDS: 0\nSEQ_LEN: 99999\nVAL_RATIO: '0.5'\nFOO: 1\nRUN_UNIT_TESTS: 1\n")
    problems = problems_of(path, env={"AUTOTRAIN_LORA_R": "x"}, overrides={"GRAD_ACCUM": 0})
    assert problems == [
        f"{path}: FOO: unknown field",
        f"{path}: ROUNDS = 0: must be >= 1 (range 1–100)",
        f"{path}: VAL_RATIO = '0.5': expected number 0.0–1.0, got text (YAML reads it as text; write 0.5)",
        f"{path}: SEQ_LEN = 99999: must be <= 8192 (range 128–8192)",
        f'{path}: RUN_UNIT_TESTS = 1: expected "0" or "1", got an integer (quote it: "1")',
        "environment: AUTOTRAIN_LORA_R = 'x': not an integer (rule: integer 1–512)",
        "override: GRAD_ACCUM = 0: must be >= 1 (range 1–128)",
    ]


def test_config_error_survives_pickling() -> None:
    error = ConfigError(["a: one", "b: two\nstill two"])
    assert error.problems == ["a: one", "b: two still two"]
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems and str(copy) == "a: one\nb: two still two"


def test_long_values_are_truncated(tmp_path: Path) -> None:
    (problem,) = problems_of(None, overrides={"TASK_SOURCE": "bank " + "x" * 500})
    assert "x" * 60 not in problem and "..." in problem and len(problem) < 200


# --- the shipped file ---


def test_the_shipped_config_is_the_offline_profile_and_lists_every_field() -> None:
    path = REPO / "config.yaml"
    config = load_config(path, env={})
    offline = {
        "BASE_MODEL": "smollm2-135m-instruct", "TEACHER_MODEL": "local:smollm2-135m-instruct",
        "SAMPLES_PER_ROUND": 8, "ROUNDS": 1, "SEQ_LEN": 256, "BATCH_SIZE": 2, "GRAD_ACCUM": 1,
        "TRAIN_STEPS": 8, "LORA_R": 8, "LORA_ALPHA": 16, "RUN_UNIT_TESTS": "1", "EVAL_SAMPLES": 4,
        "TEACHER_MAX_TOKENS": 160, "TASK_DIFFICULTY": "easy", "TEACHER_TEMPERATURE": 0.0, "VAL_RATIO": 0.1,
    }  # fmt: skip
    assert {k: getattr(config, k) for k in offline} == offline
    defaults = AutoTrainConfig()
    for name in set(FIELD_NAMES) - set(offline):
        assert getattr(config, name) == getattr(defaults, name), name
    lines = path.read_text(encoding="utf-8").splitlines()
    keys = [line.split(":", 1)[0] for line in lines if line[:1].isupper()]
    assert sorted(keys) == sorted(FIELD_NAMES)
    for i, line in enumerate(lines):
        if line[:1].isupper():
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"
    header = "\n".join(lines[:20])
    assert "#   BASE_MODEL: " in header and "#   TEACHER_MODEL: gpt-4o-mini" in header


# --- single fields, rules, redaction, reference ---


def test_validate_field() -> None:
    assert validate_field("ROUNDS", "7") == 7
    assert validate_field("VAL_RATIO", "1") == 1.0
    assert validate_field("MAX_COST_USD", "") is None
    assert validate_field("BASE_MODEL", "x/y") == "x/y"
    with pytest.raises(ConfigError) as info:
        validate_field("ROUNDS", "0")
    assert info.value.problems == ["ROUNDS = 0: must be >= 1 (range 1–100)"]
    with pytest.raises(ConfigError, match=r"ROUNDS = 'many': not an integer \(rule: integer 1–100\)"):
        validate_field("ROUNDS", "many")
    with pytest.raises(ConfigError, match=r"RUN_UNIT_TESTS = '2': expected \"0\" or \"1\""):
        validate_field("RUN_UNIT_TESTS", "2")
    with pytest.raises(ConfigError, match=r"LORA_RANK: unknown field \(did you mean LORA_R\?\)"):
        validate_field("LORA_RANK", "8")


def test_field_rule() -> None:
    assert field_rule("ROUNDS") == "integer 1–100"
    assert field_rule("VAL_RATIO") == "number 0.0–1.0"
    assert field_rule("RUN_UNIT_TESTS") == '"0" or "1"'
    assert field_rule("LEARNING_RATE") == "number > 0 and <= 1"
    assert field_rule("MAX_COST_USD") == "empty or number >= 0"
    with pytest.raises(ConfigError):
        field_rule("NOPE")


def test_redacted_dict_hides_url_credentials() -> None:
    config = load_config(env={}, overrides={"TEACHER_BASE_URL": "https://user:s3cret@llm.example/v1"})
    data = config.redacted_dict()
    assert data["TEACHER_BASE_URL"] == "https://[REDACTED]@llm.example/v1"
    assert set(data) == set(FIELD_NAMES) and data["ROUNDS"] == 3
    assert "s3cret" not in repr(config) and "s3cret" not in str(data)
    assert config.TEACHER_BASE_URL == "https://user:s3cret@llm.example/v1"  # the client still needs it


def test_redacted_dict_hides_token_userinfo_and_key_shapes_but_nothing_else() -> None:
    token = "ghp_" + "Ab1" * 12
    config = load_config(env={}, overrides={"TEACHER_BASE_URL": f"https://{token}@h/v1", "BASE_MODEL": token})
    data = config.redacted_dict()
    assert data["TEACHER_BASE_URL"] == "https://[REDACTED]@h/v1"
    assert token not in str(data) and "REDACTED" in str(data["BASE_MODEL"])
    shipped = load_config(REPO / "config.yaml", env={})
    assert shipped.redacted_dict() == shipped.model_dump()
    assert AutoTrainConfig().redacted_dict() == AutoTrainConfig().model_dump()


def test_a_pasted_key_is_not_an_environment_variable_name() -> None:
    for value in ("ghp_" + "Ab1" * 12, "sk_live_" + "x1" * 12, "aB3dE5gH7jK9mN1pQ3sT5vX7z9"):
        (problem,) = problems_of(None, overrides={"TEACHER_API_KEY_ENV": value})
        assert value not in problem and "never the key itself" in problem
    assert load_config(env={}, overrides={"TEACHER_API_KEY_ENV": "Together_Api_Key"}).TEACHER_API_KEY_ENV


def test_teacher_api_key_comes_from_the_named_variable() -> None:
    config = load_config(env={}, overrides={"TEACHER_API_KEY_ENV": "MY_KEY"})
    assert config.teacher_api_key({"MY_KEY": "k-123", "OPENAI_API_KEY": "other"}) == "k-123"
    assert config.teacher_api_key({"MY_KEY": ""}) is None
    assert config.teacher_api_key({}) is None
    assert "k-123" not in str(config.redacted_dict())


def test_reference_table_lists_every_field() -> None:
    table = config_reference_markdown()
    rows = table.splitlines()
    assert rows[0] == "| Field | Type | Default | Rule | Description |"
    assert [row.split("|")[1].strip().strip("`") for row in rows[2:]] == list(FIELD_NAMES)
    assert "| `ROUNDS` | int | `3` | integer 1–100 |" in table
    assert '| `RUN_UNIT_TESTS` | str | `"0"` | "0" or "1" |' in table
    assert "| `MAX_COST_USD` | float or empty | *(empty)* |" in table
    assert "<model>" not in table  # would vanish as an HTML tag in the rendered README


def test_reference_script_prints_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", REPO / "scripts" / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 0
    assert capsys.readouterr().out == config_reference_markdown()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n" + config_reference_markdown() + "\nmore\n")
    assert script.main(["--check", str(readme)]) == 0
    readme.write_text("# x\n| `ROUNDS` | int | `2` |\n")
    assert script.main(["--check", str(readme)]) == 1
    assert "out of date" in capsys.readouterr().err


# --- training past one GPU, and memory on one ---


def test_lora_alpha_defaults_to_twice_the_rank() -> None:
    config = AutoTrainConfig()
    # A scaling of alpha/r = 0.25 (the old 16/64) all but silences the adapter; 2 is the usual choice.
    assert config.LORA_ALPHA / config.LORA_R == 2


@pytest.mark.parametrize(
    ("name", "choices"),
    [
        ("TRAIN_LAUNCHER", ("auto", "torchrun", "accelerate")),
        ("GRADIENT_CHECKPOINTING", ("auto", "0", "1")),
        ("LORA_TARGET_MODULES", ("attention", "all-linear")),
    ],
)
def test_training_choices_take_exactly_their_words(tmp_path: Path, name: str, choices: tuple[str, ...]) -> None:
    for choice in choices:
        assert getattr(load_config(write(tmp_path, f'{name}: "{choice}"\n'), env={}), name) == choice
    assert field_rule(name) == " or ".join(f'"{c}"' for c in choices)
    (bad,) = yaml_problems(tmp_path, {name: "deepspeed"})
    assert f"{name} = 'deepspeed'" in bad and field_rule(name) in bad


def test_train_nproc_comes_from_the_environment_too() -> None:
    config = load_config(None, env={"AUTOTRAIN_TRAIN_NPROC": "2", "AUTOTRAIN_TRAIN_LAUNCHER": "torchrun"})
    assert (config.TRAIN_NPROC, config.TRAIN_LAUNCHER) == (2, "torchrun")
    (zero,) = problems_of(None, env={"AUTOTRAIN_TRAIN_NPROC": "0"})
    assert "TRAIN_NPROC" in zero and "must be >= 1" in zero
