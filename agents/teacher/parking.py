"""Many jobs through one teacher call at a time: ``concurrency`` requests in flight, and parking on an outage.

With ``on_outage``, a job that failed with a transient error is not delivered: it is kept, the map parks
and the kept jobs are sent again once a request gets through. While parked, one probe goes out every
``park_interval_s`` (counted from the previous failure), and a probe is one attempt (``probe``): the
retries of an ordinary request would make each probe several, and spread them further apart than the
interval. This is :meth:`~heidi_engine.agents.teacher.client.OpenAITeacher.map`; :func:`outage_sample` is
a notice as the bus carries it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeVar

from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.outage import TeacherOutage
from heidi_engine.bus.state import TeacherSample

__all__ = ["map_jobs", "outage_sample"]

T = TypeVar("T")


def _utc_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def map_jobs(
    complete: Callable[[list[dict[str, str]]], Completion],
    jobs: Iterable[T],
    build_messages: Callable[[T], list[dict[str, str]]],
    on_done: Callable[[T, Completion | TeacherError], None],
    *,
    concurrency: int,
    should_continue: Callable[[], bool],
    on_outage: Callable[[Outage], None] | None,
    park_interval_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    probe: Callable[[list[dict[str, str]]], Completion] | None = None,
) -> None:
    """Run ``jobs`` through ``complete`` with at most ``concurrency`` requests in flight (see
    :meth:`~heidi_engine.agents.teacher.client.OpenAITeacher.map`); while parked, each probe goes through
    ``probe`` (one attempt; ``complete`` when not given)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")

    def complete_or_error(
        messages: list[dict[str, str]], send: Callable[[list[dict[str, str]]], Completion]
    ) -> Completion | TeacherError:
        try:
            return send(messages)
        except TeacherError as exc:
            return exc

    pending: dict[Future[Completion | TeacherError], tuple[T, list[dict[str, str]]]] = {}
    kept: deque[tuple[T, list[dict[str, str]]]] = deque()
    source = iter(jobs)
    exhausted = stopped = False
    outage: Outage | None = None
    next_probe = 0.0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher") as pool:
        while True:
            while not stopped and len(pending) < (1 if outage else concurrency):
                if outage is not None and (
                    pending or not _wait_until(next_probe, should_continue, clock, sleep)
                ):
                    stopped = not pending
                    break
                if not should_continue():
                    stopped = True
                    break
                if kept:
                    item = kept.popleft()
                elif exhausted:
                    break
                else:
                    try:
                        job = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    item = (job, build_messages(job))
                send = probe if outage is not None and probe is not None else complete
                pending[pool.submit(complete_or_error, item[1], send)] = item
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                result = future.result()
                if on_outage is not None and isinstance(result, TeacherError) and result.kind == "transient":
                    kept.append(item)
                    state: Literal["parked", "waiting"] = "waiting" if outage else "parked"
                    since = outage.since if outage else _utc_iso()
                    outage = Outage(state, since, park_interval_s, result.reason, result.usage, len(kept))
                    next_probe = clock() + park_interval_s
                    on_outage(outage)
                    continue
                if outage is not None and on_outage is not None:  # an answer of any kind: it is reachable
                    back = Outage("recovered", outage.since, park_interval_s, "", TeacherUsage(), len(kept))
                    on_outage(back)
                    outage = None
                on_done(item[0], result)


def outage_sample(notice: Outage, now: datetime | None = None) -> TeacherSample:
    """``notice`` as the bus carries it (a teacher sample with no endpoint figures): the next probe is
    ``retry_every_s`` from ``now``, as :func:`map_jobs` schedules it when it gives the notice."""
    now = now or datetime.now(timezone.utc)
    parked = notice.state != "recovered"
    later = now + timedelta(seconds=notice.retry_every_s)
    next_probe = later.strftime("%Y-%m-%dT%H:%M:%SZ") if parked else None
    outage = TeacherOutage(state="parked" if parked else "recovered", since=notice.since,
                           retry_every_s=notice.retry_every_s, next_probe_at=next_probe,
                           jobs_waiting=notice.jobs_waiting, reason=notice.reason)  # fmt: skip
    return TeacherSample(endpoints={}, outage=outage)


def _wait_until(
    when: float,
    should_continue: Callable[[], bool],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Wait for ``when`` on the injected clock in short steps; False as soon as told to stop."""
    while True:
        if not should_continue():
            return False
        left = when - clock()
        if left <= 0:
            return True
        sleep(min(left, 0.25))
