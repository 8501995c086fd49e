"""Scalars as TensorBoard event files, with TensorBoard's own writer (the optional ``tensorboard`` package).

Shared by the eval stage (``REPORT_TO=tensorboard``) and ``autotrain-menu --export-tensorboard``, so both
write the same tags the same way. ``tensorboard`` is imported only when something is written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from heidi_engine.bus.state import EvalSample, EvalScores
from heidi_engine.bus.storage import DIR_MODE

__all__ = ["Scalar", "TensorBoardUnavailable", "eval_scalars", "write_tensorboard"]

Scalar = tuple[str, int, float]


def eval_scalars(sample: EvalSample) -> list[Scalar]:
    """A round's eval outcome as ``eval/<variant>/<metric>`` scalars at step = round."""
    out: list[Scalar] = []
    for variant, scores in (("base", sample.base), ("adapter", sample.adapter)):
        if not isinstance(scores, EvalScores):
            continue
        for tag, value in (
            ("val_loss", scores.val_loss),
            ("heldout_pass_at_1", scores.val_pass_at_1),
            ("humaneval_pass_at_1", scores.humaneval_pass_at_1),
        ):
            if value is not None:
                out.append((f"eval/{variant}/{tag}", sample.round, float(value)))
    return out


class TensorBoardUnavailable(Exception):
    """The ``tensorboard`` package is not installed."""


def write_tensorboard(folder: Path, scalars: Iterable[Scalar]) -> int:
    """Append ``(tag, step, value)`` scalars to a new event file in ``folder``; how many were written.

    Raises :class:`TensorBoardUnavailable` without the package and ``OSError`` when ``folder`` cannot
    be written.
    """
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise TensorBoardUnavailable(
            "the tensorboard package is not installed: pip install tensorboard"
        ) from None
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    writer = EventFileWriter(str(folder))
    count = 0
    now = time.time()
    try:
        for tag, step, value in scalars:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
            count += 1
    finally:
        writer.close()
    return count
