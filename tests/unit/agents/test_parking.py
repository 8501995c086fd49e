"""Parking on a teacher outage, on a fake clock: one single-attempt probe per interval, and the notice as the
bus carries it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from itertools import pairwise

from harness import FakeClock

from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.parking import map_jobs, outage_sample
from heidi_engine.agents.teacher.usage import TeacherUsage

MESSAGES = [{"role": "user", "content": "add two ints"}]
INTERVAL = 30.0


def _ok() -> Completion:
    return Completion("def f(): pass", TeacherUsage(requests_sent=1), "m", "stop")


def _down(retries: int) -> TeacherError:
    return TeacherError("HTTP 503", TeacherUsage(requests_sent=1 + retries, retries=retries), "transient")


class Teacher:
    """Down until ``back_at`` on the fake clock: ``complete`` spends ``retries`` back-offs of 2 s first, a
    probe fails at once; both note when they were called."""

    def __init__(self, fake: FakeClock, back_at: float, retries: int = 3) -> None:
        self.fake, self.back_at, self.retries = fake, back_at, retries
        self.completes: list[float] = []
        self.probes: list[float] = []

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        self.completes.append(self.fake.now)
        if self.fake.now < self.back_at:
            for _ in range(self.retries):
                self.fake.sleep(2.0)
            raise _down(self.retries)
        return _ok()

    def probe(self, messages: list[dict[str, str]]) -> Completion:
        self.probes.append(self.fake.now)
        if self.fake.now < self.back_at:
            raise _down(0)
        return _ok()


def _run(teacher: Teacher, fake: FakeClock, jobs: int, probe: Callable[..., Completion] | None) -> list[Outage]:
    notices: list[Outage] = []
    done: dict[int, Completion | TeacherError] = {}
    map_jobs(teacher.complete, range(jobs), lambda _job: MESSAGES, done.__setitem__, concurrency=1,
             should_continue=lambda: True, on_outage=notices.append, park_interval_s=INTERVAL,
             clock=fake.time, sleep=fake.sleep, probe=probe)  # fmt: skip
    assert sorted(done) == list(range(jobs)) and all(isinstance(r, Completion) for r in done.values())
    return notices


def test_a_parked_map_probes_once_per_interval_with_one_attempt_each() -> None:
    fake = FakeClock(1000.0)
    teacher = Teacher(fake, back_at=fake.now + 300.0)
    notices = _run(teacher, fake, 3, teacher.probe)
    # One ordinary request met the outage (with its retries); then only probes, exactly INTERVAL apart.
    assert teacher.completes[0] == 1000.0 and all(t >= teacher.back_at for t in teacher.completes[1:])
    gaps = [later - earlier for earlier, later in pairwise(teacher.probes)]
    assert gaps and all(gap == INTERVAL for gap in gaps), gaps
    assert teacher.probes[0] == 1000.0 + 3 * 2.0 + INTERVAL  # an interval after the failure that parked
    assert len(teacher.probes) == 1 + int((teacher.back_at - teacher.probes[0]) // INTERVAL) + 1
    failed = [n for n in notices if n.state != "recovered"]
    assert [n.state for n in notices] == ["parked"] + ["waiting"] * (len(failed) - 1) + ["recovered"]
    assert sum(n.usage.requests_sent for n in failed) == 4 + len(teacher.probes) - 1  # a probe is one request


def test_without_a_probe_the_ordinary_request_probes() -> None:
    fake = FakeClock(1000.0)
    teacher = Teacher(fake, back_at=fake.now + 100.0, retries=2)
    _run(teacher, fake, 2, None)
    assert not teacher.probes and len(teacher.completes) > 2


def test_an_answer_of_any_kind_ends_the_outage() -> None:
    fake = FakeClock(1000.0)
    answers: list[TeacherError] = [_down(0), TeacherError("HTTP 400: bad request", TeacherUsage())]

    def send(messages: list[dict[str, str]]) -> Completion:
        if answers:
            raise answers.pop(0)
        return _ok()

    said: list[str] = []
    map_jobs(send, range(3), lambda _job: MESSAGES, lambda job, result: said.append(f"{job}: {type(result).__name__}"),
             concurrency=1, should_continue=lambda: True, on_outage=lambda notice: said.append(notice.state),
             park_interval_s=INTERVAL, clock=fake.time, sleep=fake.sleep)  # fmt: skip
    # The probe met a 400: the server answers, so the map is back before that job's failure is delivered.
    assert said == ["parked", "recovered", "0: TeacherError", "1: Completion", "2: Completion"]


def test_the_notice_as_the_bus_carries_it() -> None:
    now = datetime(2024, 2, 15, 12, 35, 7, tzinfo=timezone.utc)
    parked = Outage("waiting", "2024-02-15T12:30:00Z", 30.0, "connection refused", TeacherUsage(), 5)
    sample = outage_sample(parked, now)
    assert sample.endpoints == {} and sample.outage is not None
    said = sample.outage
    assert (said.state, said.since, said.next_probe_at) == ("parked", "2024-02-15T12:30:00Z", "2024-02-15T12:35:37Z")
    assert (said.retry_every_s, said.jobs_waiting, said.reason) == (30.0, 5, "connection refused")
    back = outage_sample(Outage("recovered", "2024-02-15T12:30:00Z", 30.0, "", TeacherUsage(), 0), now).outage
    assert back is not None and back.state == "recovered" and back.next_probe_at is None
