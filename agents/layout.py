"""Where everything of a run lives: every path under ``runs/<id>/`` that the stages write or read.

- ``data/round_N/``: a round's data files (:class:`RoundFiles`): generate's ``raw.jsonl`` and its resume
  ledger (``failed.jsonl``, ``proposed.jsonl``), validate's ``clean.jsonl``, ``tested.jsonl``,
  ``train.jsonl`` and ``val.jsonl``.
- ``heldout.json`` (the run's held-out task ids) and ``data/heldout/val.jsonl`` (their validation rows).
- ``out_lora_round_N/``: the round's adapter; ``checkpoints/round_N/checkpoint-<step>/``: its trainer
  checkpoints; ``tracking/round_N/``: what a file-writing ``REPORT_TO`` tracker (tensorboard) keeps.
- ``eval/report_round_N.json`` and ``eval/samples_round_N.jsonl``: the round's eval report and scored
  answers; ``eval/base.json``: the base student's scores, kept for the run.
- ``best_adapter.json`` and the ``best_adapter`` link: the best round so far.

Nothing here touches the disk except :meth:`RoundFiles.ensure`, :func:`has_adapter` and
:func:`last_checkpoint`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from heidi_engine.bus.storage import DIR_MODE

__all__ = [
    "RoundFiles",
    "adapter_dir",
    "base_scores_file",
    "best_adapter_file",
    "best_adapter_link",
    "checkpoint_dir",
    "eval_dir",
    "eval_report",
    "eval_samples",
    "has_adapter",
    "heldout_files",
    "heldout_ids_file",
    "last_checkpoint",
    "round_dir",
    "tracking_dir",
]

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def round_dir(run_dir: Path, round_no: int) -> Path:
    """``data/round_N`` of the run: the round's data files."""
    return Path(run_dir) / "data" / f"round_{round_no}"


@dataclass(frozen=True)
class RoundFiles:
    """The data files of one round (or of the run's held-out rows, :func:`heldout_files`)."""

    folder: Path

    @classmethod
    def of(cls, run_dir: Path, round_no: int) -> RoundFiles:
        """The files of round ``round_no`` of the run (:func:`round_dir`)."""
        return cls(round_dir(run_dir, round_no))

    def ensure(self) -> RoundFiles:
        """Create the folder (and ``data/``) with mode 0700."""
        for folder in (self.folder.parent, self.folder):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
        return self

    @property
    def raw(self) -> Path:
        """Generate's samples, one line appended per reply."""
        return self.folder / "raw.jsonl"

    @property
    def failed(self) -> Path:
        """Generate's requests that failed for good."""
        return self.folder / "failed.jsonl"

    @property
    def requests(self) -> Path:
        """Generate's teacher requests, each written down before it is sent and again when it lands (so a
        kill between the two is counted on resume, at its most: :mod:`heidi_engine.agents.teacher.intent`)."""
        return self.folder / "requests.jsonl"

    @property
    def proposed(self) -> Path:
        """Generate's self-instruct task proposals."""
        return self.folder / "proposed.jsonl"

    @property
    def clean(self) -> Path:
        """Validate's samples that passed the schema, secret and duplicate checks."""
        return self.folder / "clean.jsonl"

    @property
    def tested(self) -> Path:
        """Validate's clean samples that passed their unit tests."""
        return self.folder / "tested.jsonl"

    @property
    def train(self) -> Path:
        """The round's training rows."""
        return self.folder / "train.jsonl"

    @property
    def val(self) -> Path:
        """The round's held-out validation rows."""
        return self.folder / "val.jsonl"


def heldout_ids_file(run_dir: Path) -> Path:
    """``heldout.json``: the run's held-out task ids."""
    return Path(run_dir) / "heldout.json"


def heldout_files(run_dir: Path) -> RoundFiles:
    """The run-level data folder of the held-out answers (``data/heldout/``)."""
    return RoundFiles(Path(run_dir) / "data" / "heldout")


def adapter_dir(run_dir: Path, round_no: int) -> Path:
    """``out_lora_round_N`` of the run."""
    return Path(run_dir) / f"out_lora_round_{round_no}"


def has_adapter(folder: Path) -> bool:
    """Whether ``folder`` holds a saved PEFT adapter."""
    return (folder / "adapter_config.json").is_file()


def checkpoint_dir(run_dir: Path, round_no: int) -> Path:
    """``checkpoints/round_N`` of the run."""
    return Path(run_dir) / "checkpoints" / f"round_{round_no}"


def last_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The last complete ``checkpoint-<step>`` in ``folder`` and its step, or None when there is none.

    ``trainer_state.json`` is written last, so a checkpoint cut short by a crash lacks it and is skipped.
    """
    if not folder.is_dir():
        return None
    found = [
        (int(match.group(1)), child)
        for child in folder.iterdir()
        if (match := _CHECKPOINT_RE.match(child.name)) and (child / "trainer_state.json").is_file()
    ]
    if not found:
        return None
    step, path = max(found)
    return path, step


def tracking_dir(run_dir: Path, round_no: int) -> Path:
    """Where a ``REPORT_TO`` tracker that writes files (tensorboard) puts round ``round_no``."""
    return Path(run_dir) / "tracking" / f"round_{round_no}"


def eval_dir(run_dir: Path) -> Path:
    """``eval/``: the eval reports, scored answers and base scores of the run."""
    return Path(run_dir) / "eval"


def eval_report(run_dir: Path, round_no: int) -> Path:
    """``eval/report_round_N.json``: the round's eval report."""
    return eval_dir(run_dir) / f"report_round_{round_no}.json"


def eval_samples(run_dir: Path, round_no: int) -> Path:
    """``eval/samples_round_N.jsonl``: every answer the round's eval scored."""
    return eval_dir(run_dir) / f"samples_round_{round_no}.jsonl"


def base_scores_file(run_dir: Path) -> Path:
    """``eval/base.json``: the base student's scores, measured once per run."""
    return eval_dir(run_dir) / "base.json"


def best_adapter_file(run_dir: Path) -> Path:
    """``best_adapter.json``: the best round so far and its scores."""
    return Path(run_dir) / "best_adapter.json"


def best_adapter_link(run_dir: Path) -> Path:
    """``best_adapter``: the link to the best round's adapter folder."""
    return Path(run_dir) / "best_adapter"
