"""``MAX_COST_USD`` as a ceiling: jobs go to the teacher while the worst case of one more request fits.

Every request in flight reserves its worst case (:mod:`heidi_engine.agents.teacher.spend`). A job is sent
only while its own worst case fits beside the run's spend and those reservations. When it does not, nothing
more is sent for now: the requests in flight land (the teacher's ``map`` returns once they have), their
actual cost replaces what they reserved, and the check is made again with nothing in flight. Generation
stops for the budget only when the spend plus that one request's worst case would pass ``MAX_COST_USD``:
the spend does not pass the budget, and is not left far below it either.

While the map is parked on an outage, nothing is in flight when it asks to send (its probe goes out alone),
and what the jobs kept for the outage reserved is not being spent: there only the spend counts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from heidi_engine.agents.teacher.account import TeacherAccount
from heidi_engine.agents.teacher.base import Completion, Outage, Teacher, TeacherError

__all__ = ["map_within_budget"]

T = TypeVar("T")


def map_within_budget(
    teacher: Teacher,
    jobs: Sequence[T],
    *,
    key: Callable[[T], str],
    messages: Callable[[T], list[dict[str, str]]],
    on_done: Callable[[T, Completion | TeacherError], None],
    account: TeacherAccount,
    concurrency: int,
    should_continue: Callable[[], bool],
    on_outage: Callable[[Outage], None] | None,
    parked: Callable[[], bool],
) -> float | None:
    """Send ``jobs`` through ``teacher.map`` (``messages`` of a job are its request, ``key`` its id for
    the reservation), within the account's budget; see the module docstring. Returns the worst case of the
    request that would have passed the budget when that stopped generation, else None (every job was
    sent, or ``should_continue`` said no)."""
    queue = deque(jobs)

    def pull() -> Iterator[T]:
        while queue:
            yield queue.popleft()

    def build(job: T) -> list[dict[str, str]]:
        built = messages(job)
        account.reserve(key(job), built)
        return built

    while True:
        refused: float | None = None

        def go_on() -> bool:
            nonlocal refused
            if not should_continue():
                return False
            if account.budget is None or not queue:
                return True  # (a job kept through an outage already holds its reservation)
            worst = account.worst_case(messages(queue[0]))
            if account.fits(worst, beside_in_flight=not parked()):
                return True
            refused = worst
            return False

        teacher.map(
            pull(), build, on_done, concurrency=concurrency, should_continue=go_on, on_outage=on_outage
        )
        account.landed_all()  # map returns once nothing is in flight
        if refused is None:
            return None
        if not account.fits(refused, beside_in_flight=False):
            return refused
