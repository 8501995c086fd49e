"""``autotrain-menu --config-show``: the effective values and where each comes from; only AUTOTRAIN_ names count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heidi_engine.bus.config import FIELD_NAMES
from heidi_engine.ui.menu_cli import main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in FIELD_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("AUTOTRAIN_" + name, raising=False)
    (tmp_path / "config.yaml").write_text("# mine\nROUNDS: 2\nLORA_R: 8\n", encoding="utf-8")
    return tmp_path


def test_config_show_json_names_each_source(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOTRAIN_SEED", "8")
    monkeypatch.setenv("ROUNDS", "7")  # a bare name changes nothing
    code = main(["--home", str(home), "--config-show", "--json", "--set", "LORA_R=32"])
    out = capsys.readouterr()
    assert code == 0, out
    rows = json.loads(out.out)
    assert set(rows) == set(FIELD_NAMES)
    assert rows["ROUNDS"] == {"value": 2, "source": "file", "rule": "integer 1–100"}
    assert (rows["SEED"]["value"], rows["SEED"]["source"]) == (8, "env AUTOTRAIN_SEED")
    assert (rows["LORA_R"]["value"], rows["LORA_R"]["source"]) == (32, "--set")
    assert rows["SEQ_LEN"]["source"] == "default"


def test_config_show_table_and_invalid_values(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOTRAIN_ROUNDS", "7")
    assert main(["--home", str(home), "--config-show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["FIELD", "VALUE", "SOURCE"]
    assert "ROUNDS 7 env AUTOTRAIN_ROUNDS" in [" ".join(line.split()) for line in lines]
    monkeypatch.setenv("AUTOTRAIN_ROUNDS", "lots")
    assert main(["--home", str(home), "--config-show"]) == 2
    err = capsys.readouterr().err
    assert "environment: AUTOTRAIN_ROUNDS = 'lots': not an integer" in err, err
