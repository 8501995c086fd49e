"""CPU time per event of folding a batch into the run state and the ledger (``apply_events`` then
``Ledger.add_many``, what the supervisor does with every batch it writes): the fold one event at a time
that came before (old, copied here) next to the batched fold (new), in the same run, on the same batches.

Batches of --batch (256) realistic events: mostly progress with one or two small counters, one in eight a
teacher reply's usage with a float cost, now and then a stage boundary or an error. Both folds must end in
equal states and ledgers. Run: ``python bench/bench_fold.py [--batch 256] [--batches 200] [--repeats 5]``.
Prints figures; asserts only that the folds agree.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from heidi_engine.bus.event import Event
from heidi_engine.bus.ledger import Ledger, Totals
from heidi_engine.bus.state import RECENT_EVENTS, RunState, apply_events, status_after
from heidi_engine.bus.totals import add_deltas

RUN = "run_20240101_000000_abcdef12"
Batch = list[tuple[Event, dict[str, Any]]]


def old_apply_events(state: RunState, batch: Sequence[tuple[Event, dict[str, Any]]]) -> RunState:
    """apply_events as it was: every event's deltas added in turn."""
    if not batch:
        return state
    counters, usage, recent = state.counters, state.usage, state.recent_events
    last = None
    for event, record in batch:
        if state.run_id is None:
            state.run_id = event.run_id
        recent.append(record)
        if event.stage == "external":
            continue
        last = event
        add_deltas(counters, usage, event.counters_delta, event.usage_delta)
        event_type = event.event_type
        if event_type != "progress":
            state.teacher_outage = None
            if event_type == "stage_start":
                state.current_stage = event.stage
            status = status_after(event_type, event.level)
            if status is not None:
                state.status = status
                if status == "running":
                    state.started_at = state.started_at or event.ts
        if event.level == "error":
            state.error = event.error or event.message
    if len(recent) > RECENT_EVENTS:
        del recent[: len(recent) - RECENT_EVENTS]
    fields = state.__dict__
    if last is not None:
        fields["current_round"] = last.round
    fields["event_count"] = state.event_count + len(batch)
    fields["last_event_ts"] = fields["updated_at"] = batch[-1][0].ts
    return state


def old_add_many(ledger: Ledger, records: Sequence[Mapping[str, Any]]) -> None:
    """Ledger.add_many as it was: every record's deltas added in turn, to the run and to its stage."""
    if not records:
        return
    if ledger.run_id is None:
        ledger.run_id = records[0]["run_id"]
    for record in records:
        counters, usage = record["counters_delta"], record["usage_delta"]
        if counters or usage:
            add_deltas(ledger.counters, ledger.usage, counters, usage)
            key = f"{record['stage']}:{record['round']}"
            totals = ledger.counted.get(key)
            if totals is None:
                totals = ledger.counted[key] = Totals()
            totals.add(counters, usage)
        if record["event_type"] != "progress" or record["level"] == "error":
            ledger.note(record)  # the run's stage, status and error: the same one-by-one code then and now
    last = records[-1]
    ledger.event_count += len(records)
    ledger.current_round = last["round"]
    ledger.last_event_ts = last["ts"]


def new_add_many(ledger: Ledger, records: Sequence[Mapping[str, Any]]) -> None:
    ledger.add_many(records)


def event(rng: random.Random, i: int, round_no: int) -> Event:
    """One event of a generate/validate stage at full speed."""
    body: dict[str, Any] = {"ts": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z", "run_id": RUN,
                            "round": round_no, "stage": "generate", "event_type": "progress",
                            "message": f"sample {i} done"}
    roll = rng.random()
    if roll < 0.125:
        body["usage_delta"] = {"requests_sent": 1, "input_tokens": rng.randint(200, 2000),
                               "output_tokens": rng.randint(50, 900), "estimated_cost_usd": rng.uniform(1e-5, 3e-3)}
        body["counters_delta"] = {"teacher_generated": 1}
    elif roll < 0.55:
        body["counters_delta"] = {"teacher_generated": 1}
    elif roll < 0.98:
        body["stage"] = "validate"
        body["counters_delta"] = rng.choice([{"validated_ok": 1}, {"validated_ok": 1, "test_pass": 1},
                                             {"rejected_schema": 1}, {"rejected_dedup": 1}, {"test_fail": 1}])
    elif roll < 0.99:
        body["level"], body["event_type"] = "success", "stage_end"
    else:
        body["level"], body["error"] = "error", "teacher timed out"
    return Event.model_validate(body)


def batches(count: int, size: int, seed: int = 7) -> list[Batch]:
    rng = random.Random(seed)
    out: list[Batch] = []
    for b in range(count):
        events = [event(rng, b * size + i, 1 + b // 50) for i in range(size)]
        out.append([(e, e.to_record()) for e in events])
    return out


Fold = Callable[[RunState, Batch], object]
LedgerFold = Callable[[Ledger, Sequence[Mapping[str, Any]]], None]


def run(data: list[Batch], fold: Fold, add_many: LedgerFold) -> tuple[float, RunState, Ledger]:
    """CPU seconds of folding every batch into a fresh state and ledger."""
    records = [[record for _event, record in batch] for batch in data]
    state, ledger = RunState(run_id=RUN, status="running"), Ledger(run_id=RUN)
    start = time.process_time()
    for batch, recs in zip(data, records, strict=True):
        fold(state, batch)
        add_many(ledger, recs)
    return time.process_time() - start, state, ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = batches(args.batches, args.batch)
    events = args.batches * args.batch
    best = {"old": float("inf"), "new": float("inf")}
    for _ in range(args.repeats):  # alternated, so that both see the same machine
        for name, fold, add_many in (("old", old_apply_events, old_add_many), ("new", apply_events, new_add_many)):
            seconds, state, ledger = run(data, fold, add_many)
            best[name] = min(best[name], seconds)
            if name == "old":
                expected = (state.model_dump_json(), ledger.model_dump_json())
            elif (state.model_dump_json(), ledger.model_dump_json()) != expected:
                raise SystemExit("the batched fold disagrees with the old one")
    old, new = (best[name] / events * 1e6 for name in ("old", "new"))
    print(f"apply_events + Ledger.add_many, {args.batches} batches of {args.batch} events "
          f"(best CPU time of {args.repeats}):")
    print(f"  old (one event at a time): {old:.2f} us/event")
    print(f"  new (batched)            : {new:.2f} us/event")
    print(f"  ratio old/new            : {old / new:.2f}x")


if __name__ == "__main__":
    main()
