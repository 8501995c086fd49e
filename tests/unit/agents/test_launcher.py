"""The multi-process train stage's pure parts: launch commands, rank detection, a quiet rank's runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from heidi_engine.agents.runtime import FatalStageError
from heidi_engine.agents.training.ranks import RankRuntime, launch_command, launched_rank


def test_torchrun_is_the_default_and_picks_its_own_port() -> None:
    command = launch_command("auto", 2, "heidi_engine.agents.train", on_gpu=False)
    assert command == launch_command("torchrun", 2, "heidi_engine.agents.train", on_gpu=True)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc-per-node=2" in command
    assert command[-2:] == ["-m", "heidi_engine.agents.train"]


def test_accelerate_always_gets_its_multi_process_launcher_and_a_free_port() -> None:
    cpu = launch_command("accelerate", 4, "m", on_gpu=False)
    assert cpu == launch_command("accelerate", 4, "m", on_gpu=True)
    assert cpu[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cpu[cpu.index("--num_processes") + 1] == "4"
    assert cpu[cpu.index("--main_process_port") + 1] == "0"
    # --cpu would make accelerate start one process, whatever --num_processes says.
    assert "--multi_gpu" in cpu and "--cpu" not in cpu


def test_bad_launches_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown launcher 'deepspeed'"):
        launch_command("deepspeed", 2, "m", on_gpu=False)
    with pytest.raises(ValueError, match="nproc must be >= 1"):
        launch_command("torchrun", 0, "m", on_gpu=False)


def test_a_rank_is_known_by_its_rank_variable() -> None:
    assert launched_rank({}) is None
    assert launched_rank({"RANK": "0"}) == 0
    assert launched_rank({"RANK": "3", "LOCAL_RANK": "1"}) == 3
    assert launched_rank({"RANK": "x"}) is None


def test_a_quiet_rank_reads_the_stage_from_the_supervisors_variables(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"TRAIN_NPROC": 2, "ROUNDS": 2}), encoding="utf-8")
    env = {"AUTOTRAIN_RUN_DIR": str(tmp_path), "AUTOTRAIN_ROUND": "2", "AUTOTRAIN_ATTEMPT": "1",
           "AUTOTRAIN_RESUME": "1", "AUTOTRAIN_STAGE": "train"}  # fmt: skip
    rt = RankRuntime.from_env(env)
    assert (rt.round, rt.attempt, rt.resume, rt.config.TRAIN_NPROC) == (2, 1, True, 2)
    rt.progress("not sent anywhere")
    rt.checkpoint()
    assert rt.relative(tmp_path / "data" / "x") == "data/x"
    with pytest.raises(FatalStageError, match="AUTOTRAIN_ROUND"):
        RankRuntime.from_env({"AUTOTRAIN_RUN_DIR": str(tmp_path)})
    with pytest.raises(FatalStageError, match="cannot read the run configuration"):
        RankRuntime.from_env({"AUTOTRAIN_RUN_DIR": str(tmp_path / "gone"), "AUTOTRAIN_ROUND": "1"})
