"""The GPU profile (config.gpu.yaml): it loads, it holds out enough tasks for a paired verdict, and the
GPU check's efficacy bench trains with its settings."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

from heidi_engine.agents.dataset.tasks import load_bank
from heidi_engine.bus.config import load_config
from heidi_engine.bus.paired import TELLING_TASKS

REPO = Path(__file__).resolve().parents[3]


def test_the_gpu_profile_loads_and_can_tell_a_change_on_its_held_out_tasks() -> None:
    warnings: list[str] = []
    config = load_config(REPO / "config.gpu.yaml", env={}, warnings=warnings)
    assert warnings == []
    heldout = math.ceil(config.VAL_RATIO * len(load_bank()))  # TASK_DIFFICULTY any: the whole bank
    assert config.TASK_DIFFICULTY == "any" and heldout >= 4 * TELLING_TASKS, heldout
    assert config.EVAL_SAMPLES >= 164 and config.RUN_UNIT_TESTS == "1"  # every held-out task, all of HumanEval
    assert re.search(r"(0\.5|1\.5)B", config.BASE_MODEL) and not config.TEACHER_MODEL.startswith("local:")
    assert "sk-" not in (REPO / "config.gpu.yaml").read_text()


def test_the_gpu_checks_efficacy_bench_trains_with_the_profiles_settings() -> None:
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    command = re.search(r'"\$PY" bench/bench_efficacy\.py (.*?)\n(?!\s)', script, re.S)
    assert command is not None, "gpu_check.sh no longer runs bench_efficacy.py"
    words = shlex.split(command.group(1).replace("\\\n", " "))
    flags = dict(zip(words[::2], words[1::2], strict=True))
    config = load_config(REPO / "config.gpu.yaml", env={})
    expected = {
        "--rounds": config.ROUNDS, "--samples": config.SAMPLES_PER_ROUND, "--steps": config.TRAIN_STEPS,
        "--lr": config.LEARNING_RATE, "--lora-r": config.LORA_R, "--targets": config.LORA_TARGET_MODULES,
        "--val-ratio": config.VAL_RATIO, "--difficulty": config.TASK_DIFFICULTY,
        "--eval-samples": config.EVAL_SAMPLES, "--seq-len": config.SEQ_LEN, "--batch-size": config.BATCH_SIZE,
        "--eval-batch-size": config.EVAL_BATCH_SIZE,
    }  # fmt: skip
    assert {flag: type(value)(flags[flag]) for flag, value in expected.items()} == expected
