"""The effective configuration is what is validated: a later source can rescue a bad value of an earlier one."""

from __future__ import annotations

from pathlib import Path

import pytest

from heidi_engine.bus.config import ConfigError, load_config


def test_an_override_rescues_a_bad_file_value_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("VAL_RATIO: 1.5\nROUNDS: 2\n")
    with pytest.raises(ConfigError):
        load_config(path, env={})
    warnings: list[str] = []
    config = load_config(path, env={}, overrides={"VAL_RATIO": "0.2"}, warnings=warnings)
    assert (config.VAL_RATIO, config.ROUNDS) == (0.2, 2)
    assert warnings == [f"{path}: VAL_RATIO = 1.5: must be <= 1.0 (range 0.0–1.0) (ignored: override sets VAL_RATIO)"]
    assert load_config(path, env={"AUTOTRAIN_VAL_RATIO": "0.3"}).VAL_RATIO == 0.3  # the environment rescues it too


def test_a_bad_override_does_not_rescue_and_other_problems_stay(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("VAL_RATIO: 1.5\nSEQ_LEN: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, overrides={"VAL_RATIO": "2"})
    assert [line.split(":")[1].strip().split()[0] for line in err.value.problems] == ["VAL_RATIO", "SEQ_LEN", "VAL_RATIO"]
    with pytest.raises(ConfigError) as err:
        load_config(path, env={}, overrides={"VAL_RATIO": "0.2"})
    assert len(err.value.problems) == 1 and "SEQ_LEN" in err.value.problems[0]
