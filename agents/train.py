"""The ``train`` stage: LoRA-train the student on the round's clean data (``python -m heidi_engine.agents.train``).

Reads ``data/round_N/train.jsonl`` and trains ``out_lora_round_N/`` with
:func:`~heidi_engine.agents.training.lora.train_lora`, continuing round N-1's adapter when there is one. Every
optimizer step is reported through :class:`~heidi_engine.agents.bus_control.BusTrainerControl` (a
sample, and the ``train_step`` counter) and is a pause/stop boundary. Checkpoints go to
``checkpoints/round_N``; a restarted or resumed agent continues from the last one with the same step
counter. A stop saves the adapter and a checkpoint, and the stage exits as stopped (resume continues it).

A round without training rows is not an error: the previous adapter is carried over (or there is none
yet) and the run goes on.

With TRAIN_NPROC over 1 the agent runs TRAIN_NPROC ranks of this module under TRAIN_LAUNCHER (see
:mod:`heidi_engine.agents.training.ranks`): every rank trains its share of each batch, rank 0 alone reports,
writes the adapter and decides pause and stop for all.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from heidi_engine.agents.dataset.samples import already_counted, read_jsonl_strict
from heidi_engine.agents.layout import (
    RoundFiles,
    adapter_dir,
    checkpoint_dir,
    has_adapter,
    last_checkpoint,
    tracking_dir,
)
from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, StopRequested, run_stage
from heidi_engine.agents.training.loading import load_student, prepare_environment
from heidi_engine.agents.training.ranks import RankRuntime, launched_rank, run_launched, run_rank

__all__ = ["SMALL_TRAINING_SET", "entry", "main", "small_set_warning"]

log = logging.getLogger(__name__)

SMALL_TRAINING_SET = 3  # fewer rows than this train an adapter on next to nothing: said, not hidden
_REJECTIONS = {
    "rejected_schema": "malformed",
    "rejected_secret": "holding a secret",
    "rejected_dedup": "duplicates",
    "test_fail": "failing their tests",
}


def small_set_warning(rows: int, round_no: int, validated: Mapping[str, int]) -> str | None:
    """The warning for a round that trains on only ``rows`` rows, with why as far as the validate stage's
    counters of the round (``validated``) tell; ``None`` when the set is not that small."""
    if not 0 < rows < SMALL_TRAINING_SET:
        return None
    rejected = [f"{validated[name]} {words}" for name, words in _REJECTIONS.items() if validated.get(name, 0) > 0]
    why = (
        f": validate set aside {', '.join(rejected)} (see logs/validate_round_{round_no}.log)"
        if rejected
        else ": the round has few samples (SAMPLES_PER_ROUND, the teacher's failures, held-out tasks kept apart)"
    )
    return f"training round {round_no} on only {rows} row(s){why}; so small a set will hardly change the adapter"


def _carry_over(rt: AgentRuntime, previous: Path | None, out_dir: Path) -> None:
    if previous is None:
        rt.progress("no training data this round and no earlier adapter: nothing to train", level="warn")
        return
    shutil.copytree(previous, out_dir, dirs_exist_ok=True)
    rt.progress(
        f"no training data this round; adapter carried over from {previous.name} to {out_dir.name}",
        level="warn",
        artifacts=[rt.relative(out_dir)],
    )


def main(rt: AgentRuntime | RankRuntime) -> None:
    """Train round ``rt.round``'s adapter (as one rank of several when ``rt`` is a :class:`RankRuntime`)."""
    cfg = rt.config
    prepare_environment(cfg.BASE_MODEL)
    from heidi_engine.agents.bus_control import BusTrainerControl, counted_train_steps
    from heidi_engine.agents.student import four_bit_problem
    from heidi_engine.agents.training.callback import NullControl, TrainerControl
    from heidi_engine.agents.training.lora import TrainSettings, train_lora

    if cfg.LOAD_IN_4BIT == "1" and (problem := four_bit_problem()) is not None:
        raise FatalStageError(problem)

    files = RoundFiles.of(rt.run_dir, rt.round)
    if not files.train.is_file():
        raise FatalStageError(f"{rt.relative(files.folder)}/train.jsonl does not exist: the validate stage writes it")
    rows = read_jsonl_strict(files.train)
    out_dir = adapter_dir(rt.run_dir, rt.round)
    previous = adapter_dir(rt.run_dir, rt.round - 1) if rt.round > 1 else None
    previous = previous if previous is not None and has_adapter(previous) else None
    if not rows:
        if isinstance(rt, AgentRuntime):
            _carry_over(rt, previous, out_dir)
        return
    if isinstance(rt, AgentRuntime):
        validated = already_counted(rt.run_dir, "validate", rt.round).counters
        if (small := small_set_warning(len(rows), rt.round, validated)) is not None:
            log.warning("%s", small)  # the train log says it too, where someone reading it looks first
            rt.progress(small, level="warn")
    settings = TrainSettings(
        seq_len=cfg.SEQ_LEN,
        batch_size=cfg.BATCH_SIZE,
        grad_accum=cfg.GRAD_ACCUM,
        train_steps=cfg.TRAIN_STEPS,
        lora_r=cfg.LORA_R,
        lora_alpha=cfg.LORA_ALPHA,
        lora_dropout=cfg.LORA_DROPOUT,
        learning_rate=cfg.LEARNING_RATE,
        seed=cfg.SEED,
        checkpoint_every=cfg.CHECKPOINT_EVERY,
        report_to=cfg.REPORT_TO,
        target_modules=("all-linear",) if cfg.LORA_TARGET_MODULES == "all-linear" else None,
        gradient_checkpointing=None if cfg.GRADIENT_CHECKPOINTING == "auto" else cfg.GRADIENT_CHECKPOINTING == "1",
        load_in_4bit=cfg.LOAD_IN_4BIT == "1",
    )
    if cfg.REPORT_TO != "none" and importlib.util.find_spec(cfg.REPORT_TO) is None:
        raise FatalStageError(
            f"REPORT_TO={cfg.REPORT_TO} needs the {cfg.REPORT_TO} package: pip install {cfg.REPORT_TO}, "
            "or set REPORT_TO to none"
        )
    if cfg.REPORT_TO == "tensorboard":
        # HF's TensorBoard callback reads its folder from the environment; the run keeps its curves.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tracking_dir(rt.run_dir, rt.round))
    checkpoints = checkpoint_dir(rt.run_dir, rt.round)
    resume = rt.resume or rt.attempt > 0
    rt.checkpoint()  # a stop or pause asked during the previous stage takes effect before the model load
    start = f"from {previous.name}" if previous is not None else "from a fresh adapter"
    rt.progress(
        f"training round {rt.round}: {len(rows)} rows, {settings.train_steps} steps on {cfg.BASE_MODEL}, {start}"
    )
    model_and_tokenizer = load_student(cfg.BASE_MODEL, for_training=True, load_in_4bit=settings.load_in_4bit)
    control: TrainerControl
    if isinstance(rt, AgentRuntime):
        control = BusTrainerControl(rt, counted_steps=counted_train_steps(rt.run_dir, rt.round))
    else:
        control = NullControl()
    try:
        result = train_lora(
            model_name=cfg.BASE_MODEL,
            train_rows=rows,
            out_dir=out_dir,
            checkpoint_dir=checkpoints,
            settings=settings,
            control=control,
            init_adapter=previous,
            resume=resume,
            model_and_tokenizer=model_and_tokenizer,
        )
    except FileExistsError:
        raise FatalStageError(
            f"{rt.relative(checkpoints)} holds checkpoints of an earlier attempt but this is a fresh start; "
            "resume the run (autotrain-menu --resume-run) or remove that folder"
        ) from None
    except (ValueError, FileNotFoundError) as exc:
        # Rows the template refuses, a previous adapter without its config: retrying cannot help.
        raise FatalStageError(str(exc)) from None
    finally:
        if isinstance(control, BusTrainerControl):
            control.flush()
    adapter = rt.relative(out_dir)
    if result.stopped_early:
        found = last_checkpoint(checkpoints)
        last = found[0] if found is not None else None
        where = f"last checkpoint {rt.relative(last)}" if last is not None else "no checkpoint"
        rt.progress(
            f"training stopped at step {result.steps_done}/{result.total_steps}: adapter saved to {adapter}, "
            f"{where}; autotrain-menu --resume-run continues from it",
            level="warn",
            artifacts=[adapter] + ([rt.relative(last)] if last is not None else []),
        )
        raise StopRequested()
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "unknown"
    rt.progress(
        f"adapter trained: {result.steps_done} steps, final loss {loss}, saved to {adapter}",
        level="success",
        artifacts=[adapter],
    )


def entry() -> int:
    """The agent's process: one trainer, the launcher of TRAIN_NPROC ranks, or one of those ranks."""
    rank = launched_rank()
    if rank is not None:
        return run_rank(main, rank)
    try:
        config = RankRuntime.from_env().config
    except FatalStageError:
        return run_stage(main)  # which reports the same problem the usual way
    if config.TRAIN_NPROC > 1:
        return run_launched(config, "heidi_engine.agents.train")
    return run_stage(main)


if __name__ == "__main__":
    sys.exit(entry())
