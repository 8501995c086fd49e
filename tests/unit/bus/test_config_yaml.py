"""Reading and editing config files: strict YAML 1.2 structure checks, and the comment-preserving,
atomic round-trip editor behind ``dump_yaml_update`` (``bus/config/yaml_file.py``, driven through ``heidi_engine.bus.config``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from heidi_engine.bus.config import AutoTrainConfig, ConfigError, dump_yaml_update, load_config
from heidi_engine.bus.config import yaml_file as _config_yaml

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --- the file itself ---


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems_of(path) == [f"{path}: file not found"]


def test_unreadable_paths(tmp_path: Path) -> None:
    assert "cannot read" in problems_of(tmp_path)[0]
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"ROUNDS: \xff\n")
    assert "not UTF-8" in problems_of(path)[0]


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    (problem,) = problems_of(write(tmp_path, "ROUNDS: 2\nSEED: [1, 2\nLORA_R: 8\n"))
    assert problem.startswith(f"{tmp_path / 'config.yaml'}: invalid YAML at line ") and "column" in problem
    (problem,) = problems_of(write(tmp_path, "ROUNDS: 2\n  bad: indent: here\n"))
    assert "invalid YAML at line 2, column" in problem


@pytest.mark.parametrize(
    ("text", "found"), [("- ROUNDS\n- 3\n", "a list"), ("just words\n", "a single value")]
)
def test_a_document_that_is_not_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    (problem,) = problems_of(write(tmp_path, text))
    assert problem.endswith(f"expected a mapping of KEY: value lines, found {found}")


def test_non_string_and_duplicate_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "1: x\nROUNDS: 2\nnull: y\nROUNDS: 3\n")
    assert problems_of(path) == [
        f"{path}: line 1: key '1' is not a field name",
        f"{path}: line 3: key 'null' is not a field name",
        f"{path}: line 4: ROUNDS: duplicate key (first on line 2)",
    ]


def test_empty_and_comment_only_files_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == AutoTrainConfig()
    assert load_config(write(tmp_path, "# nothing here\n"), env={}) == AutoTrainConfig()


# --- updating the file ---

SAMPLE = """\
# top comment
ROUNDS: 3  # inline comment kept

# section
BASE_MODEL: "old # not a comment"   # trailing
SEED: >
  41
LORA_R: 8
"""


def test_dump_yaml_update_preserves_comments_and_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    path.chmod(0o640)
    dump_yaml_update(
        path,
        {"ROUNDS": "5", "BASE_MODEL": "new model #1", "SEED": 7, "LEARNING_RATE": 1e-5, "MAX_COST_USD": ""},
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# top comment\nROUNDS: 5  # inline comment kept\n\n# section\n")
    # A trailing comment keeps its column.
    assert 'BASE_MODEL: "new model #1"          # trailing\nSEED: 7\nLORA_R: 8\n' in text
    assert text.endswith("LEARNING_RATE: 1e-05\nMAX_COST_USD:\n")
    config = load_config(path, env={})
    assert (config.ROUNDS, config.BASE_MODEL, config.SEED, config.LORA_R) == (5, "new model #1", 7, 8)
    assert (config.LEARNING_RATE, config.MAX_COST_USD) == (1e-5, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.yaml"]  # no temp file left behind


def test_dump_yaml_update_quotes_what_yaml_would_retype(tmp_path: Path) -> None:
    path = write(tmp_path, "RUN_UNIT_TESTS: '0'\n")
    dump_yaml_update(path, {"RUN_UNIT_TESTS": "1", "BASE_MODEL": "true", "TEACHER_MODEL": "local:x"})
    assert path.read_text() == 'RUN_UNIT_TESTS: "1"\nBASE_MODEL: "true"\nTEACHER_MODEL: local:x\n'
    assert load_config(path, env={}).BASE_MODEL == "true"


def test_dump_yaml_update_edits_every_field_of_the_shipped_config(tmp_path: Path) -> None:
    original = (REPO / "config.yaml").read_text(encoding="utf-8")
    path = write(tmp_path, original)
    updates = {
        "ROUNDS": 2,
        "VAL_RATIO": 0.5,
        "RUN_UNIT_TESTS": "0",
        "BASE_MODEL": "Qwen/Qwen2.5-0.5B-Instruct",
    }
    dump_yaml_update(path, updates)
    config = load_config(path, env={})
    assert {k: getattr(config, k) for k in updates} == updates
    new = path.read_text(encoding="utf-8").splitlines()
    old = original.splitlines()
    assert len(new) == len(old)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert sorted(b.split(":")[0] for _, b in changed) == sorted(updates)


def test_dump_yaml_update_refuses_bad_values_and_leaves_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    with pytest.raises(ConfigError) as info:
        dump_yaml_update(path, {"ROUNDS": "0", "NOPE": 1, "SEQ_LEN": "x"})
    assert info.value.problems == [
        "update: NOPE: unknown field",
        "update: SEQ_LEN = 'x': not an integer (rule: integer 128–8192)",
        "update: ROUNDS = 0: must be >= 1 (range 1–100)",
    ]
    assert path.read_text(encoding="utf-8") == SAMPLE


def test_dump_yaml_update_creates_a_missing_file_private(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    dump_yaml_update(path, {"ROUNDS": 4})
    assert path.read_text() == "ROUNDS: 4\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_dump_yaml_update_refuses_a_file_it_cannot_edit_safely(tmp_path: Path) -> None:
    for text, why in (("ROUNDS: [1,\n", "cannot edit it, invalid YAML at line 2"), ("- 1\n- 2\n", "not a mapping")):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError, match=why):
            dump_yaml_update(path, {"SEED": 1})
        assert path.read_text() == text


def test_yaml_1_2_numbers_and_words(tmp_path: Path) -> None:
    """YAML 1.2: an exponent without a dot is a number, and yes/no/on/off are words, not booleans."""
    config = load_config(write(tmp_path, "LEARNING_RATE: 2e-4\nBASE_MODEL: yes\nSEED: 0x10\n"), env={})
    assert (config.LEARNING_RATE, config.BASE_MODEL, config.SEED) == (2e-4, "yes", 16)


def test_an_edit_keeps_crlf_line_endings_and_block_comments(tmp_path: Path) -> None:
    text = "# head\r\nROUNDS: 3  # note\r\n\r\n# tail block\r\nSEED: 1\r\n"
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode())
    dump_yaml_update(path, {"SEED": 9, "LORA_R": 4})
    assert path.read_bytes().decode() == "# head\r\nROUNDS: 3  # note\r\n\r\n# tail block\r\nSEED: 9\r\nLORA_R: 4\r\n"


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(st.text(), st.floats(allow_nan=False, allow_infinity=False), st.integers()),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_any_value_survives_an_edit(value: object, newline: str) -> None:
    text = newline.join(["# head", "KEY: old  # note", "PLAIN: x", "OTHER: 1", ""])
    edited = _config_yaml.edit_text(text, {"KEY": value, "PLAIN": value, "NEW": value})
    assert YAML(typ="safe", pure=True).load(edited) == {"KEY": value, "PLAIN": value, "OTHER": 1, "NEW": value}
    head, key_line, plain_line, *_ = edited.split(newline)
    assert head == "# head" and key_line.endswith("# note") and plain_line.startswith("PLAIN: ")
    assert edited.count(newline) == 5 and edited.endswith(newline)
