"""``autotrain-menu --export-tensorboard RUN_ID DIR``: a run's curves as TensorBoard scalars.

Trainer samples (``metrics.jsonl``) become ``train/loss``, ``train/learning_rate``, ``train/grad_norm``
and ``train/tokens_per_s`` over one step axis for the whole run (each round continues where the previous
one ended); each round's eval outcome becomes ``eval/<variant>/val_loss``, ``.../heldout_pass_at_1`` and
``.../humaneval_pass_at_1`` at step = round (``eval_scalars``, the tags the eval stage logs with
``REPORT_TO=tensorboard``), written with TensorBoard's own event-file writer.

Exporting again replaces, never adds: TensorBoard reads every event file of a folder, so a second file
with the same points would draw each curve twice. The export leaves ``.autotrain-export.json`` naming the
run and the file it wrote; the next export of that run removes that file first. A folder holding any
other event file (another run's export, a tracker's log) is refused, naming it.
"""

from __future__ import annotations

from pathlib import Path

from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.journal import read_samples
from heidi_engine.bus.scalars import Scalar, TensorBoardUnavailable, eval_scalars, write_tensorboard
from heidi_engine.bus.state import EvalSample, TrainerSample
from heidi_engine.bus.storage import atomic_write_json, read_json

_MARKER = ".autotrain-export.json"
_EVENT_FILES = "events.out.tfevents.*"

__all__ = ["ExportError", "export_run", "scalars_of"]


class ExportError(Exception):
    """The export cannot be done; ``bad_usage`` when the run id or run is wrong (exit 2), else exit 1."""

    def __init__(self, message: str, *, bad_usage: bool) -> None:
        super().__init__(message)
        self.bad_usage = bad_usage


def scalars_of(run_dir: Path) -> list[Scalar]:
    """``(tag, step, value)`` for every trainer gauge and eval result of a run, in file order."""
    out: list[Scalar] = []
    offsets: dict[int, int] = {}  # round -> steps of the rounds before it
    last_step: dict[int, int] = {}
    for sample in read_samples(run_dir):
        if isinstance(sample, EvalSample):
            out += eval_scalars(sample)
            continue
        if not isinstance(sample, TrainerSample):
            continue
        if sample.round not in offsets:
            offsets[sample.round] = sum(last_step.values())
        last_step[sample.round] = max(last_step.get(sample.round, 0), sample.step)
        step = offsets[sample.round] + sample.step
        for tag, value in (
            ("train/loss", sample.loss),
            ("train/learning_rate", sample.learning_rate),
            ("train/grad_norm", sample.grad_norm),
            ("train/tokens_per_s", sample.tokens_per_s),
        ):
            if value is not None:
                out.append((tag, step, float(value)))
    return out


def export_run(home: Path, run_id: str, folder: Path) -> int:
    """Write run ``run_id``'s scalars under ``folder``; the number of scalars written."""
    if not is_run_id(run_id):
        raise ExportError(f"{run_id!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)", bad_usage=True)
    run_dir = home / "runs" / run_id
    if not run_dir.is_dir():
        raise ExportError(f"no run {run_id} in {home / 'runs'}", bad_usage=True)
    try:
        _clear_previous_export(folder, run_id)
        before = set(folder.glob(_EVENT_FILES))
        written = write_tensorboard(folder, scalars_of(run_dir))
        mine = sorted(p.name for p in set(folder.glob(_EVENT_FILES)) - before)
        atomic_write_json(folder / _MARKER, {"run_id": run_id, "files": mine})
        return written
    except TensorBoardUnavailable as exc:
        raise ExportError(str(exc), bad_usage=False) from None
    except OSError as exc:
        raise ExportError(f"cannot write to {folder}: {exc.strerror or exc}", bad_usage=False) from None


def _clear_previous_export(folder: Path, run_id: str) -> None:
    """Remove this run's earlier export from ``folder``; ExportError when other event files are there."""
    if not folder.is_dir():
        return
    try:
        marker = read_json(folder / _MARKER)
    except (OSError, ValueError):
        marker = None
    ours: set[str] = set()
    if isinstance(marker, dict) and marker.get("run_id") == run_id and isinstance(marker.get("files"), list):
        ours = {str(name) for name in marker["files"]}
    others = sorted(p.name for p in folder.glob(_EVENT_FILES) if p.name not in ours)
    if others:
        owner = marker.get("run_id") if isinstance(marker, dict) else None
        whose = f"run {owner}'s export" if isinstance(owner, str) else "event files not written by an export of this run"
        raise ExportError(
            f"{folder} already holds {whose} ({others[0]}{' …' if len(others) > 1 else ''}); "
            "TensorBoard would mix both: choose an empty folder (one per run)",
            bad_usage=True,
        )
    for name in ours:
        (folder / name).unlink(missing_ok=True)
