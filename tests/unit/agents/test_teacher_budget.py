"""MAX_COST_USD as a ceiling (:mod:`heidi_engine.agents.teacher.budget`), against an in-process teacher whose
``map`` keeps requests in flight the way the HTTP teacher's does: no sockets, no threads, no sleeps."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from heidi_engine.agents.teacher.account import TeacherAccount
from heidi_engine.agents.teacher.base import Completion, Outage, TeacherError
from heidi_engine.agents.teacher.budget import map_within_budget
from heidi_engine.agents.teacher.pricing import Price
from heidi_engine.agents.teacher.usage import TeacherUsage

MODEL = "m"
TABLE = {MODEL: Price(0.0, 1_000_000.0)}  # one output token costs $1; input is free
MAX_TOKENS = 4  # a request's worst case: $4
ANSWER = TeacherUsage(requests_sent=1, output_tokens=1)  # an answer: $1, a quarter of the worst case


class InFlightTeacher:
    """Sends while ``should_continue`` says yes and a slot is free (never again once it said no), then
    lands the oldest request; records how many were in flight at once."""

    model = MODEL

    def __init__(self, *, parked: bool = False) -> None:
        self.parked = parked  # a parked map sends one probe at a time
        self.sent: list[Any] = []
        self.most_in_flight = 0
        self.maps = 0

    def map(
        self,
        jobs: Iterable[Any],
        build_messages: Callable[[Any], list[dict[str, str]]],
        on_done: Callable[[Any, Completion | TeacherError], None],
        *,
        concurrency: int,
        should_continue: Callable[[], bool] = lambda: True,
        on_outage: Callable[[Outage], None] | None = None,
    ) -> None:
        self.maps += 1
        source, flight, stopped = iter(jobs), deque[Any](), False
        while True:
            while not stopped and len(flight) < (1 if self.parked else concurrency):
                if not should_continue():
                    stopped = True
                    break
                job = next(source, None)
                if job is None:
                    break
                build_messages(job)
                flight.append(job)
                self.sent.append(job)
                self.most_in_flight = max(self.most_in_flight, len(flight))
            if not flight:
                return
            job = flight.popleft()
            on_done(job, Completion("def f(): pass", ANSWER, MODEL, "stop"))

    def close(self) -> None:
        pass


def _run(budget: float | None, jobs: int = 40, *, parked: bool = False, go: Callable[[], bool] = lambda: True
         ) -> tuple[InFlightTeacher, TeacherAccount, float | None]:  # fmt: skip
    account = TeacherAccount(MODEL, TABLE, MAX_TOKENS, TeacherUsage(), batch_size=4, budget=budget)
    teacher = InFlightTeacher(parked=parked)

    def done(job: int, result: Completion | TeacherError) -> None:
        assert isinstance(result, Completion)
        account.record(result.usage, "teacher_generated", job_id=str(job))

    refused = map_within_budget(
        teacher, list(range(jobs)), key=str, messages=lambda job: [{"role": "user", "content": ""}],
        on_done=done, account=account, concurrency=4, should_continue=go, on_outage=None,
        parked=lambda: parked,
    )  # fmt: skip
    return teacher, account, refused


def test_it_waits_for_the_requests_in_flight_and_stops_only_when_one_more_would_pass() -> None:
    teacher, account, refused = _run(16.0)
    # 12 answers ($12) leave room for one more worst case ($4); the 13th answer leaves none.
    assert len(teacher.sent) == 13 and account.spent == 13.0 <= 16.0
    assert refused == 4.0 and account.spent + refused > 16.0
    assert teacher.most_in_flight == 4 and teacher.maps > 1  # it waited (several maps), it did not stop
    assert account.budget_reached(refused) == (
        "budget reached: spent $13.0000; one more request could cost up to $4.0000, which would pass "
        "MAX_COST_USD $16.0000"
    )


def test_requests_in_flight_never_reserve_past_the_budget() -> None:
    teacher, account, _ = _run(9.0)
    assert teacher.most_in_flight == 2  # 2 × $4 in flight, a third would make $12 > $9
    assert len(teacher.sent) == 6 and account.spent == 6.0  # $6 + $4 > $9


def test_without_a_budget_every_job_goes() -> None:
    teacher, _, refused = _run(None)
    assert len(teacher.sent) == 40 and refused is None and teacher.maps == 1


def test_a_request_worth_more_than_the_whole_budget_is_never_sent() -> None:
    teacher, account, refused = _run(3.5)
    assert teacher.sent == [] and refused == 4.0 and account.spent == 0.0
    assert "one more request could cost up to $4.0000, which would pass MAX_COST_USD $3.5000" in (
        account.budget_reached(refused)
    )


def test_while_parked_only_the_spend_counts_and_a_stop_is_not_the_budget() -> None:
    # Parked: the map sends a probe with nothing in flight, so reservations held for kept jobs do not count.
    teacher, account, refused = _run(16.0, parked=True)
    assert len(teacher.sent) == 13 and refused == 4.0 and teacher.maps == 1 and account.spent == 13.0
    asked = iter([True, True, False])
    teacher, _, refused = _run(16.0, go=lambda: next(asked, False))
    assert len(teacher.sent) == 2 and refused is None


def test_the_message_says_so_when_the_spend_itself_passed_the_budget() -> None:
    account = TeacherAccount(MODEL, TABLE, MAX_TOKENS, TeacherUsage(), batch_size=4, budget=2.0)
    account.record(TeacherUsage(requests_sent=1, output_tokens=3), "teacher_generated")
    assert not account.fits(0.0, beside_in_flight=False)
    assert account.budget_reached(4.0) == "budget reached: spent $3.0000, which passes MAX_COST_USD $2.0000"


@pytest.mark.parametrize("beside", [True, False])
def test_fits_counts_the_reservations_only_beside_requests_in_flight(beside: bool) -> None:
    account = TeacherAccount(MODEL, TABLE, MAX_TOKENS, TeacherUsage(), batch_size=4, budget=10.0)
    account.reserve("a", [{"role": "user", "content": ""}])
    account.reserve("b", [{"role": "user", "content": ""}])
    assert account.fits(4.0, beside_in_flight=beside) is (not beside)
    account.landed_all()
    assert account.fits(4.0, beside_in_flight=True)
