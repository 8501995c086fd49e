"""The round's intent file (:mod:`heidi_engine.agents.teacher.intent`): a row before each request, one when it
landed, and what a resumed stage makes of them, a request lost in flight counted at its most."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from heidi_engine.agents.teacher.account import TeacherAccount
from heidi_engine.agents.teacher.intent import IntentLog, read_intents
from heidi_engine.agents.teacher.pricing import Price, estimate_cost
from heidi_engine.agents.teacher.usage import TeacherUsage

ANSWERED = TeacherUsage(requests_sent=1, input_tokens=30, output_tokens=12)
REFUSED = TeacherUsage(requests_sent=1, rate_limits_hit=1)


def test_landed_requests_add_up_and_a_request_never_landed_counts_at_its_most(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    with IntentLog(path) as log:
        first = log.sent(300, 512, retry=False)
        log.landed(first, REFUSED)
        again = log.sent(300, 512, retry=True)
        log.landed(again, ANSWERED)
        log.sent(280, 512, retry=False)  # killed before its reply
    intents = read_intents(path)
    assert (intents.requests, intents.lost) == (3, 1)
    assert intents.usage == REFUSED + ANSWERED + TeacherUsage(
        requests_sent=1, retries=1, timed_out=1, timed_out_input_max=280, timed_out_output_max=512
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [("sent" in row, "landed" in row) for row in rows] == [(True, False), (False, True)] * 2 + [
        (True, False)
    ]
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_request_no_file_and_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    IntentLog(path).close()
    assert not path.exists() and read_intents(path).requests == 0
    path.write_text('{"sent": "a-1", "retry": false, "input_max": 10, "output_max": 5}\n{"landed": "a-')
    assert (read_intents(path).requests, read_intents(path).lost) == (1, 1)
    with IntentLog(path) as log:
        log.landed("a-1", ANSWERED)  # the torn line is removed before this one is appended
    intents = read_intents(path)
    assert intents.lost == 0 and intents.usage == ANSWERED


def test_a_closed_log_refuses_rows(tmp_path: Path) -> None:
    log = IntentLog(tmp_path / "requests.jsonl")
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.sent(1, 1, retry=False)


def test_rows_from_many_threads_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    with IntentLog(path) as log:

        def worker() -> None:
            for _ in range(50):
                log.landed(log.sent(1000, 512, retry=False), ANSWERED)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 800 and all(isinstance(json.loads(line), dict) for line in lines)
    intents = read_intents(path)
    assert (intents.requests, intents.lost) == (400, 0) and intents.usage.input_tokens == 30 * 400


def test_a_resume_reports_the_lost_request_with_its_worst_cost() -> None:
    table = {"m": Price(2.0, 8.0)}
    lost = TeacherUsage(requests_sent=1, timed_out=1, timed_out_input_max=400, timed_out_output_max=512)
    account = TeacherAccount("m", table, 512, ANSWERED + lost, batch_size=4, budget=None)
    answered_cost = estimate_cost("m", 30, 12, table) or 0.0
    # The events counted the answered request, not the one in flight at the kill.
    delta = account.catch_up({"requests_sent": 1, "input_tokens": 30, "output_tokens": 12,
                              "estimated_cost_usd": answered_cost}, run_cost=answered_cost)  # fmt: skip
    bound = estimate_cost("m", 400, 512, table) or 0.0
    assert delta == {"requests_sent": 1, "estimated_cost_usd": pytest.approx(bound)}
    assert account.spent == pytest.approx(answered_cost + bound)
    # Counted already (a second resume): nothing more.
    assert account.catch_up({"requests_sent": 2, "input_tokens": 30, "output_tokens": 12,
                             "estimated_cost_usd": answered_cost + bound}, run_cost=answered_cost + bound) == {}  # fmt: skip
