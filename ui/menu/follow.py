"""``--wait``: following a run to its end, with its progress inside the current stage.

:func:`follow_run` shows a rich progress bar on a terminal and plain lines otherwise, and returns the
command line's exit code. :class:`StageProgress` adds the progress inside a stage: samples generated,
steps trained, eval problems run, with an ETA. It reads the supervisor's full state (the ``snapshot``
command, about once a second): the trainer's step and its own ETA while training, the round's samples
against SAMPLES_PER_ROUND while generating (the ETA from the rate seen since following began in this
stage), the problems run while evaluating.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import PIPELINE_STAGES
from heidi_engine.bus.exit_status import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import FINISHED_STATUSES
from heidi_engine.ui.connect import pid_alive
from heidi_engine.ui.menu.launch import PROG
from heidi_engine.ui.text import fmt_duration

__all__ = ["StageProgress", "follow_run"]

_POLL_S = 0.2
_LOST_AFTER_S = 15.0
_DETAIL_S = 1.0  # the full state is asked for at most once a second


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class StageProgress:
    """Turns successive states into ``step 40/100 · ETA 2m 10s``-style details (``None``: nothing to add)."""

    def __init__(self) -> None:
        self._start: tuple[str, int, float, int] | None = None  # stage, round, time, done when first seen

    def _eta(self, stage: str, round_no: int, now: float, done: int, total: int) -> str:
        if self._start is None or self._start[:2] != (stage, round_no):
            self._start = (stage, round_no, now, done)
            return ""
        _stage, _round, since, first = self._start
        if done <= first or now <= since or done >= total:
            return ""
        rate = (done - first) / (now - since)
        return f" · ETA {fmt_duration((total - done) / rate)}"

    def detail(self, state: Mapping[str, Any], now: float) -> str | None:
        """The in-stage progress of ``state`` (the ``snapshot`` command's ``state``) at monotonic ``now``."""
        stage, round_no = state.get("current_stage"), _int(state.get("current_round"))
        counters = state.get("counters") or {}
        if stage == "train":
            trainer = state.get("trainer") or {}
            step, total = _int(trainer.get("step")), _int(trainer.get("total"))
            if not total:
                return None
            eta = trainer.get("eta_s")
            return f"step {step}/{total}" + (f" · ETA {fmt_duration(eta)}" if isinstance(eta, int | float) else "")
        if stage == "generate":
            per_round = _int((state.get("config") or {}).get("SAMPLES_PER_ROUND"))
            if not per_round or not round_no:
                return None
            asked = _int(counters.get("teacher_generated")) + _int(counters.get("teacher_failed"))
            done = max(0, min(per_round, asked - per_round * (round_no - 1)))
            outage = state.get("teacher_outage")
            if isinstance(outage, dict):  # parked: no ETA holds until a probe gets through
                return f"sample {done}/{per_round} · teacher unreachable since {clean(str(outage.get('since')), 40)}"
            return f"sample {done}/{per_round}" + self._eta("generate", round_no, now, done, per_round)
        if stage == "eval":
            return f"{_int(counters.get('eval_total'))} problems run, {_int(counters.get('eval_pass'))} passed"
        return None


def _stages_done(status: dict[str, Any]) -> int:
    """Stages finished so far, estimated from the round and the stage in progress."""
    round_no = int(status.get("current_round") or 0)
    stage = status.get("current_stage")
    stages = PIPELINE_STAGES
    index = stages.index(stage) if stage in stages else (len(stages) if stage == "round_end" else 0)
    return max(0, (round_no - 1) * len(stages) + index) if round_no else 0


def _describe(status: dict[str, Any], detail: str | None = None) -> str:
    return (
        f"round {status.get('current_round')}/{status.get('total_rounds')} · "
        f"{clean(str(status.get('current_stage') or '-'))}{' · ' + detail if detail else ''} · "
        f"{clean(str(status.get('status')))}"
    )


def _stage_detail(client: ControlClient, inside: StageProgress, now: float) -> str | None:
    """Progress inside the current stage from the full state; ``None`` when it cannot be had."""
    try:
        snapshot = client.call("snapshot", timeout_s=3.0)
    except BusError:
        return None
    state = snapshot.get("state") if isinstance(snapshot, dict) else None
    return inside.detail(state, now) if isinstance(state, dict) else None


def follow_run(client: ControlClient, run_id: str, out: TextIO, err: TextIO) -> int:
    """Follow ``run_id`` to its end: a rich progress bar on a terminal, plain lines otherwise.

    0 when it completed; 1 when it stopped, failed or was interrupted, or the supervisor went away.
    """
    tty = out.isatty()
    progress = None
    if tty:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=out),
            transient=False,
        )
        progress.start()
    task = progress.add_task(run_id, total=None) if progress is not None else None
    started, lost_since, last_line = time.monotonic(), None, ""
    inside, detail, detail_at = StageProgress(), None, float("-inf")
    status: dict[str, Any] = {}
    interrupted = False
    try:
        while True:
            try:
                status = dict(client.call("status", timeout_s=3.0))
                lost_since = None
            except BusError as exc:
                lost_since = lost_since or time.monotonic()
                # A dead pid is certain at once; a silent live one gets some time (it may be busy).
                gone = not client.info.remote and not pid_alive(client.info.pid)
                if gone or time.monotonic() - lost_since > _LOST_AFTER_S:
                    print(
                        f"{PROG}: lost the supervisor while following {run_id}: {exc}", file=err, flush=True
                    )
                    return EXIT_FAILURE
                time.sleep(_POLL_S)
                continue
            if status.get("run_id") != run_id:
                print(
                    f"{PROG}: run {run_id} is no longer the supervisor's run "
                    f"(now {clean(str(status.get('run_id')))})",
                    file=err,
                    flush=True,
                )
                return EXIT_FAILURE
            total = max(1, int(status.get("total_rounds") or 1)) * len(PIPELINE_STAGES)
            finished = status.get("status") in FINISHED_STATUSES
            if finished:
                detail = None  # the last in-stage figures would read as still under way
            elif time.monotonic() - detail_at >= _DETAIL_S:
                detail_at = time.monotonic()
                detail = _stage_detail(client, inside, detail_at)
            if progress is not None and task is not None:
                done = total if status.get("status") == "completed" else min(_stages_done(status), total)
                progress.update(
                    task, total=total, completed=done, description=f"{run_id} {_describe(status, detail)}"
                )
            else:
                line = _describe(status, detail)
                if line != last_line:
                    last_line = line
                    print(f"[{fmt_duration(time.monotonic() - started):>8}] {run_id} {line}", file=out, flush=True)
            if finished:
                break
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if progress is not None:
            progress.stop()
    if interrupted:
        # Ctrl+C stops the following, not the run: say so, and how to stop the run itself.
        print(
            f"{PROG}: stopped following; run {run_id} continues ({PROG} --stop to stop it, "
            f"{PROG} --wait to follow it again)",
            file=err,
            flush=True,
        )
        return EXIT_INTERRUPTED
    final = status.get("status")
    if final == "completed":
        print(f"run {run_id} completed", file=out, flush=True)
        return EXIT_OK
    reason = f": {clean(str(status['error']))}" if status.get("error") else ""
    print(f"{PROG}: run {run_id} ended {final}{reason}", file=err, flush=True)
    return EXIT_FAILURE
