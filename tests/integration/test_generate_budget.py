"""MAX_COST_USD as a ceiling, in-process against a priced fake teacher (127.0.0.1).

An answer costs about a quarter of one request's worst case; four requests are in flight at once; the
budget is about four worst cases. Generation waits for the requests in flight when one more does not fit
beside them, re-checks with what they actually cost, and stops only when the spend plus one request's
worst case would pass the budget.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fakes.openai_server import FakeOpenAIServer
from harness import FileRuntime

from heidi_engine.agents import generate
from heidi_engine.agents.dataset.samples import read_jsonl_skipping_bad
from heidi_engine.agents.dataset.tasks import load_bank, tasks_for_round
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.teacher.pricing import Price, estimate_cost
from heidi_engine.agents.teacher.spend import Spend
from heidi_engine.bus.config import load_config
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.state import RunState, apply_event

pytestmark = pytest.mark.timeout(90)

MODEL = "priced-fake"
PRICE = Price(1.0, 100.0)  # USD per 1M tokens: a request's worst case is mostly its 1000-token cap
MAX_TOKENS = 1000
SAMPLES = 20
BUDGET = 0.45
SOLUTION = "```python\ndef solve(x):\n    return x\n```"
PROMPT, COMPLETION = 600, 250  # what each answer reports: $0.0256, about a quarter of a worst case


def test_generation_goes_on_until_one_more_worst_case_would_pass_the_budget(tmp_path: Path) -> None:
    (tmp_path / "pricing.json").write_text(
        json.dumps({MODEL: {"input": PRICE.input_per_m, "output": PRICE.output_per_m}})
    )
    table = {MODEL: PRICE}
    answer = estimate_cost(MODEL, PROMPT, COMPLETION, table)
    assert answer is not None
    spend = Spend(MODEL, table, MAX_TOKENS)
    tasks = tasks_for_round(load_bank(), 1, SAMPLES, 42)
    worst = [spend.worst_case(generate.solution_messages(task, prefill=False)) for task in tasks]
    assert (
        3.5 * answer < min(worst) and max(worst) < 4.5 * answer and 4 * max(worst) < BUDGET < 5 * min(worst)
    )
    # With nothing in flight, sample n is asked while n answers plus its own worst case fit the budget.
    expected = next(n for n in range(SAMPLES) if n * answer + worst[n] > BUDGET)

    with FakeOpenAIServer(latency_s=0.05, script=[("ok", SOLUTION, PROMPT, COMPLETION)] * SAMPLES) as server:
        config = load_config(None, env={}, overrides={
            "TEACHER_BASE_URL": server.url, "TEACHER_MODEL": MODEL, "TEACHER_MAX_TOKENS": str(MAX_TOKENS),
            "SAMPLES_PER_ROUND": str(SAMPLES), "TEACHER_CONCURRENCY": "4", "MAX_COST_USD": str(BUDGET),
            "VAL_RATIO": "0",
        })  # fmt: skip
        generate.main(FileRuntime(tmp_path, config, "generate"))  # type: ignore[arg-type]
        requests = len(server.requests)
        assert server.max_in_flight <= 4

    state = RunState()
    for event in read_events(tmp_path):
        apply_event(state, event)
    spent = state.usage["estimated_cost_usd"]
    assert expected == 14 and requests == expected  # the old rule, "in flight and one more", stopped at 7
    assert len(read_jsonl_skipping_bad(RoundFiles.of(tmp_path, 1).raw)) == expected
    assert state.counters["teacher_generated"] == expected and state.usage["requests_sent"] == expected
    assert spent == pytest.approx(expected * answer) and spent <= BUDGET
    assert spent + worst[expected] > BUDGET
    warnings = [
        e.message for e in read_events(tmp_path) if e.level == "warn" and e.message.startswith("budget")
    ]
    assert len(warnings) == 1, warnings
    found = re.fullmatch(
        r"budget reached: spent \$([\d.]+); one more request could cost up to \$([\d.]+), which would pass "
        r"MAX_COST_USD \$([\d.]+); generation stopped with (\d+) of (\d+) samples written",
        warnings[0],
    )
    assert found is not None, warnings[0]
    said_spent, said_worst, said_budget = (float(found.group(i)) for i in (1, 2, 3))
    assert (said_spent, said_worst, said_budget) == (round(spent, 4), round(worst[expected], 4), BUDGET)
    assert said_spent + said_worst > said_budget >= said_spent  # what it says is true
    assert (int(found.group(4)), int(found.group(5))) == (expected, SAMPLES)
