"""``--wait``: following a run to its end, with its progress inside the current stage.

:func:`follow_run` shows a rich progress bar on a terminal and plain lines otherwise, and returns the
command line's exit code. Plain lines (a pipe, a log) come only when something changed (the round, the
stage, the status, an item done, a pause's hint) or every :data:`HEARTBEAT_S` seconds, never a line per
poll. :class:`StageProgress` adds the progress inside a stage, read from the supervisor's full state (the
``snapshot`` command, about once a second): the trainer's steps of this round (and its ETA, the mean over
its steps) while training; while
generating and evaluating, the latest progress event of this stage and round, which says how far the agent
got (``5/12 written (incl. 4 held-out answers)``, ``generated 16/40 answers``, ``tested 12/40 answers, 7
passed``) in the words :mod:`heidi_engine.agents.generate` and :mod:`heidi_engine.agents.eval` write them.
Each figure is tagged with its stage and round, so a stage's line never shows another stage's figures.

Elsewhere the ETA is a moving average over the items this follower saw completed in the stage (the last
:data:`ETA_WINDOW` observations), hidden until :data:`ETA_MIN_ITEMS` of them are done: one sample says
nothing of a rate.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import PIPELINE_STAGES
from heidi_engine.bus.exit_status import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import FINISHED_STATUSES
from heidi_engine.ui.connect import pid_alive
from heidi_engine.ui.menu.launch import PROG
from heidi_engine.ui.status_view import resume_hint
from heidi_engine.ui.text import fmt_duration

__all__ = [
    "ETA_MIN_ITEMS",
    "ETA_WINDOW",
    "HEARTBEAT_S",
    "Detail",
    "StageProgress",
    "follow_run",
    "pause_hint",
]

HEARTBEAT_S = 30.0  # a plain line at least this often while nothing changes, so a log shows it is alive
ETA_MIN_ITEMS = 3
ETA_WINDOW = 10
_POLL_S = 0.2
_LOST_AFTER_S = 15.0
_DETAIL_S = 1.0  # the full state is asked for at most once a second

# The agents' progress messages (agents/generate.py, agents/eval.py); a test holds both sides to them.
_GENERATED = re.compile(r"(\d+)/(\d+) written(?: \(incl\. (\d+) held-out answers?\))?, (\d+) failed")
_EVALUATED = re.compile(r"(generated|tested) (\d+)/(\d+) answers(?:, (\d+) passed)?")
PAUSE_HINT = "pausing after"  # what the supervisor's hint for a requested pause says (supervisor/facade.py)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Detail:
    """The progress inside one stage of one round: the facts, and the ETA apart (it changes every poll)."""

    stage: str
    round: int
    text: str
    eta: str = ""

    def __str__(self) -> str:
        return self.text + (f" · ETA {self.eta}" if self.eta else "")


class _Rate:
    """Items done over time within one phase of a stage: a moving average once enough are seen."""

    def __init__(self, key: tuple[object, ...]) -> None:
        self.key = key
        self.first: int | None = None
        self.seen: deque[tuple[float, int]] = deque(maxlen=ETA_WINDOW + 1)

    def eta(self, now: float, done: int, total: int) -> float | None:
        if self.first is None or done < self.seen[-1][1]:  # the first look, or the stage restarted
            self.first = done
            self.seen.clear()
        if not self.seen or done != self.seen[-1][1]:
            self.seen.append((now, done))
        (since, before), (last, latest) = self.seen[0], self.seen[-1]
        if latest - self.first < ETA_MIN_ITEMS or done >= total or last <= since or latest <= before:
            return None
        return (total - done) * (last - since) / (latest - before)


def _latest(
    events: Sequence[Mapping[str, Any]], stage: str, round_no: int, pattern: re.Pattern[str]
) -> re.Match[str] | None:
    """The figures of the newest progress event of ``stage`` in ``round_no`` that states them."""
    for record in reversed(events):
        if record.get("stage") != stage or record.get("round") != round_no:
            continue
        if record.get("event_type") == "stage_start":
            return None  # an earlier attempt's figures are not this one's
        found = pattern.search(str(record.get("message") or ""))
        if found is not None:
            return found
    return None


class StageProgress:
    """Turns successive states into ``step 40/100 · ETA 2m 10s``-style details (``None``: nothing to add)."""

    def __init__(self) -> None:
        self._rate: _Rate | None = None

    def _detail(self, key: tuple[str, int, str], text: str, now: float, done: int, total: int) -> Detail:
        if self._rate is None or self._rate.key != key:
            self._rate = _Rate(key)
        eta = self._rate.eta(now, done, total)
        return Detail(key[0], key[1], text, "" if eta is None else fmt_duration(eta))

    def progress(self, state: Mapping[str, Any], now: float) -> Detail | None:
        """The in-stage progress of ``state`` (the ``snapshot`` command's ``state``) at monotonic ``now``."""
        stage, round_no = str(state.get("current_stage")), _int(state.get("current_round"))
        events = state.get("recent_events") or []
        if stage == "train":
            trainer = state.get("trainer") or {}
            step, total = _int(trainer.get("step")), _int(trainer.get("total"))
            if not total or _int(trainer.get("round")) != round_no:  # not yet this round's trainer
                return None
            # The trainer's own ETA is the mean over its steps, pauses left out: shown from the third step.
            eta = trainer.get("eta_s")
            shown = isinstance(eta, int | float) and ETA_MIN_ITEMS <= step < total
            return Detail(stage, round_no, f"step {step}/{total}", fmt_duration(eta) if shown else "")
        if stage == "generate":
            found = _latest(events, stage, round_no, _GENERATED)
            if found is None:
                return None
            written, total, held, failed = (int(group or 0) for group in found.groups())
            done = min(total, written + failed)
            text = f"sample {done}/{total}" + (f" (incl. {held} held-out)" if held else "")
            outage = state.get("teacher_outage")
            if isinstance(outage, dict):  # parked: no ETA holds until a probe gets through
                since = clean(str(outage.get("since")), 40)
                return Detail(stage, round_no, f"{text} · teacher unreachable since {since}")
            return self._detail((stage, round_no, "samples"), text, now, done, total)
        if stage == "eval":
            found = _latest(events, stage, round_no, _EVALUATED)
            if found is None:
                return Detail(stage, round_no, "loading the student and scoring the held-out rows")
            verb, done_text, total_text, passed = found.groups()
            done, total = int(done_text), int(total_text)
            text = f"{verb} {done}/{total} answers" + (f", {passed} passed" if passed is not None else "")
            return self._detail((stage, round_no, verb), text, now, done, total)
        return None

    def detail(self, state: Mapping[str, Any], now: float) -> str | None:
        """:meth:`progress` as one piece of text (the ETA included)."""
        found = self.progress(state, now)
        return None if found is None else str(found)


def pause_hint(state: Mapping[str, Any]) -> str | None:
    """What a requested pause waits for (the supervisor's hint), while it has not landed yet."""
    if not state.get("pause_requested") or state.get("status") == "paused":
        return None
    for record in reversed(state.get("recent_events") or []):
        message = str(record.get("message") or "")
        if PAUSE_HINT in message:
            return clean(message[message.index(PAUSE_HINT) :], 160)
    return None


def _stages_done(status: dict[str, Any]) -> int:
    """Stages finished so far, estimated from the round and the stage in progress."""
    round_no = int(status.get("current_round") or 0)
    stage = status.get("current_stage")
    stages = PIPELINE_STAGES
    index = stages.index(stage) if stage in stages else (len(stages) if stage == "round_end" else 0)
    return max(0, (round_no - 1) * len(stages) + index) if round_no else 0


def _describe(status: dict[str, Any], detail: str | None = None, hint: str | None = None) -> str:
    return (
        f"round {status.get('current_round')}/{status.get('total_rounds')} · "
        f"{clean(str(status.get('current_stage') or '-'))}{' · ' + detail if detail else ''} · "
        f"{clean(str(status.get('status')))}{' · ' + hint if hint else ''}"
    )


class _Inside:
    """The in-stage detail and the pause's hint, from the full state, at most once a second; a detail of
    another stage or round than the status names is never shown."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client
        self.progress = StageProgress()
        self.detail: Detail | None = None
        self.hint: str | None = None
        self.at = float("-inf")

    def update(self, status: Mapping[str, Any], now: float) -> None:
        where = (status.get("current_stage"), _int(status.get("current_round")))
        stale = self.detail is not None and (self.detail.stage, self.detail.round) != where
        if status.get("status") in FINISHED_STATUSES:
            self.detail = self.hint = None  # the last in-stage figures would read as still under way
            return
        if not stale and now - self.at < _DETAIL_S:
            return
        self.at = now
        try:
            snapshot = self.client.call("snapshot", timeout_s=3.0)
        except BusError:
            self.detail = None if stale else self.detail
            return
        state = snapshot.get("state") if isinstance(snapshot, dict) else None
        if not isinstance(state, dict):
            return
        found = self.progress.progress(state, now)
        self.detail = found if found is not None and (found.stage, found.round) == where else None
        self.hint = pause_hint(state) if status.get("pause_requested") else None

    def line(self, status: dict[str, Any], *, eta: bool = True) -> str:
        text = None if self.detail is None else str(self.detail) if eta else self.detail.text
        return _describe(status, text, self.hint)


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
    started, lost_since = time.monotonic(), None
    last_facts, last_print = "", float("-inf")
    inside = _Inside(client)
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
                    if gone:  # the run it left active is interrupted: say how to continue it
                        hint = resume_hint({"run_id": run_id, "status": "interrupted"})
                        print(f"{PROG}: the run is interrupted; {hint}", file=err, flush=True)
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
            now = time.monotonic()
            inside.update(status, now)
            if progress is not None and task is not None:
                done = total if status.get("status") == "completed" else min(_stages_done(status), total)
                progress.update(
                    task, total=total, completed=done, description=f"{run_id} {inside.line(status)}"
                )
            else:
                # The ETA alone changing is no news: a line when a fact changed, or as a heartbeat.
                facts = inside.line(status, eta=False)
                if facts != last_facts or now - last_print >= HEARTBEAT_S:
                    last_facts, last_print = facts, now
                    line = inside.line(status)
                    print(f"[{fmt_duration(now - started):>8}] {run_id} {line}", file=out, flush=True)
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
