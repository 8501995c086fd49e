"""Delivery receipts: a copy of a message that already arrived is dropped, a gap is remembered until the
message arrives, the memory is bounded, and the publisher's reading of an answer refuses nonsense."""

from __future__ import annotations

from heidi_engine.bus.delivery import MAX_MISSING, Answer, Receipts, parse_answer


def test_in_order_messages_are_new_and_copies_are_dropped() -> None:
    receipts = Receipts()
    assert [receipts.admit("generate:1", "s1", n) for n in (1, 2, 3)] == [True, True, True]
    assert receipts.admit("generate:1", "s1", 2) is False
    assert receipts.admit("generate:1", "s1", 3) is False
    assert receipts.duplicates == 2
    assert receipts.answer("generate:1", "s1") == {"through": 3, "missing": [], "forgotten": 0}


def test_a_gap_is_remembered_until_filled_and_then_a_copy_is_dropped() -> None:
    receipts = Receipts()
    for n in (1, 2, 5):
        assert receipts.admit("a", "s", n)
    assert receipts.answer("a", "s") == {"through": 5, "missing": [3, 4], "forgotten": 0}
    assert receipts.gaps == 2
    assert receipts.admit("a", "s", 4) is True
    assert receipts.admit("a", "s", 4) is False
    assert receipts.answer("a", "s") == {"through": 5, "missing": [3], "forgotten": 0}


def test_sessions_and_senders_are_apart_and_unnumbered_messages_always_pass() -> None:
    receipts = Receipts()
    assert receipts.admit("a", "s1", 1) and receipts.admit("a", "s2", 1) and receipts.admit("b", "s1", 1)
    assert all(receipts.admit("a", "s1", None) for _ in range(3))
    assert receipts.duplicates == 0
    assert receipts.answer("nobody", "never") == {"through": 0, "missing": [], "forgotten": 0}


def test_memory_is_bounded_in_sessions_and_in_gap_numbers() -> None:
    receipts = Receipts(max_sources=2, max_missing=4)
    receipts.admit("a", "s1", 1)
    receipts.admit("a", "s2", 1)
    receipts.admit("a", "s1", 2)  # s1 is now the most recent
    receipts.admit("a", "s3", 1)  # forgets s2, the oldest
    assert receipts.answer("a", "s2")["through"] == 0
    assert receipts.answer("a", "s1")["through"] == 2
    receipts.admit("a", "s3", 100)
    assert receipts.answer("a", "s3") == {"through": 100, "missing": [96, 97, 98, 99], "forgotten": 94}
    assert receipts.gaps == 98
    receipts.admit("a", "s3", 103)  # two more gap numbers: the oldest two kept are forgotten
    assert receipts.answer("a", "s3") == {"through": 103, "missing": [98, 99, 101, 102], "forgotten": 96}
    assert receipts.undelivered("a") == 4 + 96


def test_a_number_far_beyond_the_last_costs_nothing_and_breaks_nothing() -> None:
    receipts = Receipts()
    receipts.admit("a", "s", 1)
    assert receipts.admit("a", "s", 2**63 - 1)
    answer = receipts.answer("a", "s")
    assert answer["through"] == 2**63 - 1 and len(answer["missing"]) == MAX_MISSING
    assert answer["forgotten"] == 2**63 - 3 - MAX_MISSING
    assert receipts.admit("a", "s", 2**63 - 1) is False


def test_parse_answer_takes_only_a_well_formed_answer() -> None:
    good = {"through": 7, "missing": [2, 5], "forgotten": 1, "server": "abc", "reading": True}
    assert parse_answer(good) == Answer(7, frozenset({2, 5}), 1, "abc", True)
    assert parse_answer({**good, "through": 0, "missing": [], "reading": False}) == Answer(0, frozenset(), 1, "abc", False)
    for change in ({"through": -1}, {"through": True}, {"missing": [7]}, {"missing": ["1"]}, {"forgotten": None},
                   {"server": None}, {"reading": 1}, {"through": 10**6, "missing": list(range(1, MAX_MISSING + 2))}):  # fmt: skip
        assert parse_answer({**good, **change}) is None, change
    assert parse_answer(None) is None and parse_answer([]) is None


def test_what_a_publisher_said_it_sent_tells_what_never_arrived() -> None:
    receipts = Receipts()
    for n in (1, 2, 4):
        receipts.admit("train:7", "main", n)
    receipts.admit("train:7", "beat", 1)
    assert receipts.undelivered("train:7") == 1  # the gap only: nobody said how many were sent
    assert receipts.answer("train:7", "main", sent=6) == {"through": 4, "missing": [3], "forgotten": 0}
    receipts.answer("train:7", "beat", sent=1)
    assert receipts.undelivered("train:7") == 1 + 2  # number 3, and 5 and 6 that never came
    assert receipts.undelivered("train:8") == 0
    receipts.answer("train:9", "never-arrived", sent=2)  # asked before anything arrived
    assert receipts.undelivered("train:9") == 2
