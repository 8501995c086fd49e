"""The generate stage: the teacher writes a solution to each of the round's tasks, into ``raw.jsonl``.

Tasks come from ``TASK_SOURCE`` (the bank, a JSONL file, or teacher-proposed tasks with
"self-instruct"); sample ``i`` of round ``r`` has the id ``r{r}-{i:05d}`` over
:func:`~heidi_engine.agents.dataset.tasks.tasks_for_round`, the same on every attempt. The teacher is the HTTP
client (``TEACHER_CONCURRENCY`` requests in flight) or, for ``local:<model>``, a model in this process.

- Each reply is scanned with the redaction rule table as it arrives; the *redacted* text is what reaches
  ``raw.jsonl``, and ``metadata.secret_kinds`` tells validate to reject the sample.
- A request the server refused for that sample alone (or a proposal that does not parse) counts
  ``teacher_failed``, is recorded in ``failed.jsonl`` and is not asked again in this round; its usage
  still counts. A reply that did not end properly (:mod:`.teacher.reply`) is retried, never written;
  when its retries run out it fails as ``incomplete``. A fatal teacher error (a bad key, model or URL,
  quota or billing, the same 400 again and again) ends the stage with the provider's message.
- An outage that outlasts a request's retries parks the stage: a warning event says "teacher unreachable
  since ..., retrying every N s", one probe goes out every ``TEACHER_PARK_INTERVAL_S``, pause and stop
  still work, and a second warning says when it recovered. No sample is failed for it.
- Progress events go out every ``TEACHER_CONCURRENCY`` completions or two seconds, with counter and usage
  deltas (kept by :mod:`.teacher.account`; cost from the price table: ``null``, i.e. unknown, when the
  model is not priced or a reply carried no usage). A pause parks there; a stop ends the stage once the
  requests in flight land. ``MAX_COST_USD`` is a ceiling (:mod:`.teacher.budget`): a request goes only
  while its worst case fits beside the spend and those in flight; the stage ends complete, with a warning,
  once the spend plus one request's worst case would pass it.
- Each request is written down before it is sent (``requests.jsonl``, :mod:`.teacher.intent`): one lost
  to a kill in flight is counted on resume, at its most.
- The held-out tasks (:mod:`heldout`) are fixed the first time the pool is known and answered once, in
  that round, after the round's own samples (their ids continue the round's numbering), unless a verified
  reference answers them (the bank's); they are never drawn for training. With ``RUN_UNIT_TESTS=1`` tasks
  that near-duplicate a HumanEval problem are left out.
- A resumed stage skips every sample already written or failed for good, asks again for those that
  failed for a transient reason (an outage, cut replies), and first reports what is on disk but
  missing from ``events.jsonl`` (a kill between the write and its event), so nothing is counted twice.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from heidi_engine.agents.dataset.heldout import (
    HeldoutError,
    answered_by_reference,
    fix_heldout,
    split_pool,
    without_humaneval,
)
from heidi_engine.agents.dataset.samples import (
    JsonlAppender,
    Sample,
    SampleMetadata,
    already_counted,
    read_jsonl_skipping_bad,
    sample_id,
)
from heidi_engine.agents.dataset.tasks import (
    Task,
    TaskSourceError,
    build_self_instruct_messages,
    extract_code,
    instruction_text,
    parse_proposed_task,
    task_pool,
    tasks_for_round,
)
from heidi_engine.agents.dataset.tasks import build_solution_messages as solution_messages
from heidi_engine.agents.layout import RoundFiles
from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, StopRequested, run_stage
from heidi_engine.agents.teacher.account import NOTES_MAX, Batch, TeacherAccount, recorded_usage
from heidi_engine.agents.teacher.base import Completion, Outage, Teacher, TeacherError
from heidi_engine.agents.teacher.budget import map_within_budget
from heidi_engine.agents.teacher.factory import TeacherUnavailable, open_teacher
from heidi_engine.agents.teacher.failures import failed_for_good, failure_row, stage_ending
from heidi_engine.agents.teacher.intent import IntentLog, read_intents
from heidi_engine.agents.teacher.local import local_model_name
from heidi_engine.agents.teacher.parking import outage_sample
from heidi_engine.agents.teacher.pricing import Price, PricingError, lookup_price, price_table
from heidi_engine.agents.teacher.usage import TeacherUsage
from heidi_engine.bus.event import utc_now_iso
from heidi_engine.bus.redaction import Redactor, default_redactor

__all__ = ["main", "price_table", "solution_messages"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Job:
    id: str
    task: Task
    secret_kinds: frozenset[str] = frozenset()


def _ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {row["id"] for row in rows if isinstance(row.get("id"), str)}


class _Generation:
    """One attempt of the stage: what is on disk, what is pending report, and the stop conditions."""

    def __init__(
        self, rt: AgentRuntime, files: RoundFiles, table: dict[str, Price], redactor: Redactor
    ) -> None:
        config = rt.config
        self.rt = rt
        self.files = files
        self.redactor = redactor
        self.model = config.TEACHER_MODEL
        self.total = config.SAMPLES_PER_ROUND
        self.heldout = 0  # held-out answers asked this round, inside ``total`` (said so in every count)
        self.concurrency = config.TEACHER_CONCURRENCY  # a local: teacher generates this many per batch
        raw_rows, failed_rows = read_jsonl_skipping_bad(files.raw), read_jsonl_skipping_bad(files.failed)
        proposed_rows = read_jsonl_skipping_bad(files.proposed)
        self.done = _ids(raw_rows)
        self.failed = _ids(row for row in failed_rows if failed_for_good(row)) - self.done
        self.proposals = {row["id"]: row for row in proposed_rows if isinstance(row.get("id"), str)}
        usage = recorded_usage(raw_rows, nested=True)
        usage += recorded_usage(failed_rows + proposed_rows, nested=False)
        # Every request the round sent, lost ones (sent, never landed) at their most: none goes unbilled.
        self.intents = read_intents(files.requests)
        usage = usage.most(self.intents.usage)
        self.account = TeacherAccount(
            self.model,
            table,
            config.TEACHER_MAX_TOKENS,
            usage,
            batch_size=self.concurrency,
            budget=config.MAX_COST_USD,
        )
        self.parked: Outage | None = None
        self.stopping = False
        self.budget_hit = False
        self.refused = 0.0  # the worst case of the request the budget refused

    # -- reporting ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Report what the files hold beyond what ``events.jsonl`` counted; learn the run's spend."""
        counted = already_counted(self.rt.run_dir, "generate", self.rt.round)
        counters = counted.counters
        on_disk = {"teacher_generated": len(self.done), "teacher_failed": len(self.failed)}
        missing = {k: v - counters.get(k, 0) for k, v in on_disk.items() if v > counters.get(k, 0)}
        catch_up = self.account.catch_up(counted.usage, counted.run_cost)
        if self.done or self.failed or self.proposals or self.intents.requests:
            written = f"{len(self.done)} sample(s) already written, {len(self.failed)} failed"
            lost = self.intents.lost
            if catch_up and lost:
                written += f"; {lost} request(s) sent got no reply, counted at their most"
            self.rt.progress(
                f"generate resumed: {written}"
                + ("; reporting what was not yet counted" if missing or catch_up else ""),
                counters=missing,
                usage=catch_up,
            )

    def _account(
        self, usage: TeacherUsage, counter: str | None, note: str | None = None, job_id: str | None = None
    ) -> None:
        if self.account.record(usage, counter, note, job_id):
            self.flush()
            # A batch boundary: park here while paused (nothing new is sent meanwhile).
            self.rt.wait_if_paused()

    def flush(self) -> None:
        """Send what happened since the last progress event, if anything did."""
        teacher_sample = self.account.flush(self._progress)
        if teacher_sample is not None:
            self.rt.sample(teacher_sample)

    def _progress(self, batch: Batch) -> None:
        notes = f" ({'; '.join(batch.notes)})" if batch.notes else ""
        self.rt.progress(
            f"generate round {self.rt.round}: {len(self.done)}/{self.total} written{self.incl()}, "
            f"{len(self.failed)} failed{batch.speed}{notes}",
            level="warn" if batch.warn else "info",
            counters=batch.counters,
            usage=batch.usage,
        )

    def incl(self) -> str:
        return f" (incl. {self.heldout} held-out answers)" if self.heldout else ""

    def should_continue(self) -> bool:
        if self.stopping or self.budget_hit:
            return False
        if self.parked is not None:
            self.rt.wait_if_paused()  # a pause lands while parked too
        if self.rt.stop_requested():
            self.stopping = True
            return False
        return True

    def send(
        self,
        teacher: Teacher,
        jobs: Sequence[_T],
        key: Callable[[_T], str],
        messages: Callable[[_T], list[dict[str, str]]],
        on_done: Callable[[_T, Completion | TeacherError], None],
    ) -> None:
        """Send ``jobs`` to the teacher while the budget allows one more (:mod:`.teacher.budget`)."""
        refused = map_within_budget(
            teacher, jobs, key=key, messages=messages, on_done=on_done, account=self.account,
            concurrency=self.concurrency, should_continue=self.should_continue, on_outage=self.outage,
            parked=lambda: self.parked is not None,
        )  # fmt: skip
        if refused is not None:
            self.budget_hit, self.refused = True, refused

    def outage(self, notice: Outage) -> None:
        """``on_outage`` of the teacher's map: count what failed attempts spent, say parked/recovered."""
        if notice.usage != TeacherUsage():
            self._account(notice.usage, None)
        self.rt.sample(outage_sample(notice))  # the run's state: parked since when, the next probe; or back
        if notice.state == "waiting":
            return
        self.flush()
        if notice.state == "parked":
            self.parked = notice
            self.rt.progress(
                f"teacher unreachable since {notice.since}, retrying every {notice.retry_every_s:g} s "
                f"({notice.jobs_waiting} sample(s) waiting; last error: {notice.reason})",
                level="warn",
            )
        else:
            self.parked = None
            self.rt.progress(
                f"teacher reachable again (unreachable since {notice.since}); generation resumes",
                level="warn",
            )

    # -- results -----------------------------------------------------------------------------------

    def _fail(self, job_id: str, phase: str, task_id: str, error: TeacherError) -> None:
        fatal = stage_ending(error, self.rt.config.TEACHER_API_KEY_ENV)
        if fatal is not None:
            self.account.hold(error.usage)
            self.flush()
            raise FatalStageError(fatal)
        with JsonlAppender(self.files.failed) as ledger:
            ledger.append(failure_row(job_id, phase, task_id, error))
        self.failed.add(job_id)
        self.account.warn()
        self._account(error.usage, "teacher_failed", f"{job_id}: {error.reason}", job_id)

    def solved(self, job: _Job, result: Completion | TeacherError) -> None:
        """``on_done`` of a solution request: write the redacted sample, or record the failure."""
        if isinstance(result, TeacherError):
            self._fail(job.id, "solve", job.task.task_id, result)
            return
        kinds = set(job.secret_kinds)
        texts = []
        for text in (result.text, instruction_text(job.task), job.task.tests):
            redacted, found = self.redactor.redact_with_kinds(text)
            texts.append(redacted)
            kinds |= found
        reply, instruction, tests = texts
        sample = Sample(
            id=job.id,
            instruction=instruction,
            input="",
            output=extract_code(reply),
            tests=tests,
            metadata=SampleMetadata(
                task_id=job.task.task_id,
                entry_point=job.task.entry_point,
                round=self.rt.round,
                teacher_model=self.model,
                usage=result.usage.record(),
                ts=utc_now_iso(),
                finish_reason=result.finish_reason,
                secret_kinds=sorted(kinds),
            ),
        )
        with JsonlAppender(self.files.raw) as raw:
            raw.append(sample.record())
        self.done.add(job.id)
        note = f"{job.id}: secret redacted ({', '.join(sorted(kinds))})" if kinds else None
        if kinds:
            self.account.warn()
        self.account.timing(result)
        self._account(result.usage, "teacher_generated", note, job.id)

    def proposed(self, index: int, result: Completion | TeacherError) -> None:
        """``on_done`` of a self-instruct request: keep the proposed task, or count a failure."""
        job_id = sample_id(self.rt.round, index)
        task_id = f"self/{job_id}"
        if isinstance(result, TeacherError):
            self._fail(job_id, "propose", task_id, result)
            return
        reply, kinds = self.redactor.redact_with_kinds(result.text)
        try:
            task = parse_proposed_task(reply, task_id)
        except TaskSourceError as exc:
            self._fail(job_id, "propose", task_id, TeacherError(str(exc)[:200], result.usage))
            return
        row = {
            "id": job_id,
            "task": task.model_dump(),
            "secret_kinds": sorted(kinds),
            "usage": result.usage.record(),
            "ts": utc_now_iso(),
        }
        with JsonlAppender(self.files.proposed) as ledger:
            ledger.append(row)
        self.proposals[job_id] = row
        self._account(result.usage, None, None, job_id)

    # -- phases ------------------------------------------------------------------------------------

    def propose(self, teacher: Teacher, bank: list[Task]) -> list[_Job]:
        """Ask the teacher for the tasks not yet proposed; the jobs for every proposal on disk."""
        seed, round_no = self.rt.config.SEED, self.rt.round

        def messages(index: int) -> list[dict[str, str]]:
            examples = random.Random(f"{seed}-{round_no}-{index}").sample(bank, min(3, len(bank)))
            return build_self_instruct_messages(examples, round_no, index)

        settled = self.done | self.failed | set(self.proposals)
        wanted = [i for i in range(self.total) if sample_id(round_no, i) not in settled]
        self.send(teacher, wanted, lambda index: sample_id(round_no, index), messages, self.proposed)
        jobs = []
        for job_id, row in sorted(self.proposals.items()):
            try:
                task = Task.model_validate(row.get("task"))
            except ValueError as exc:
                raise FatalStageError(
                    f"{self.files.proposed}: proposal {job_id} is unreadable: {exc}"
                ) from None
            jobs.append(_Job(job_id, task, frozenset(row.get("secret_kinds") or ())))
        return jobs

    def solve(self, teacher: Teacher, jobs: list[_Job]) -> None:
        wanted = [job for job in jobs if job.id not in self.done and job.id not in self.failed]
        local = local_model_name(self.model) is not None
        self.send(teacher, wanted, lambda job: job.id, lambda job: solution_messages(job.task, prefill=local),
                  self.solved)  # fmt: skip


def _without_humaneval(rt: AgentRuntime, pool: list[Task]) -> list[Task]:
    """The pool less the tasks that near-duplicate a HumanEval problem (HumanEval is part of eval)."""
    kept, overlaps = without_humaneval(pool)
    if overlaps:
        examples = ", ".join(f"{task} ~ {problem}" for task, problem in sorted(overlaps.items())[:NOTES_MAX])
        rt.progress(f"{len(overlaps)} task(s) near-duplicate a HumanEval problem and are left out ({examples})",
                    level="warn")  # fmt: skip
    if not kept:
        raise FatalStageError("every task of the pool near-duplicates a HumanEval problem")
    return kept


def _heldout_split(rt: AgentRuntime, pool: list[Task], first: int) -> tuple[list[Task], list[_Job]]:
    """The training pool, and the jobs for the held-out tasks still to be answered (ids from ``first``)."""
    try:
        # A held-out task that a verified reference answers is never asked: validate would drop the answer.
        answered = answered_by_reference(rt.config.TASK_SOURCE)
        train, to_answer = split_pool(
            rt.run_dir, rt.round, pool, rt.config.VAL_RATIO, rt.config.SEED, answered=answered
        )
    except HeldoutError as exc:
        raise FatalStageError(str(exc)) from None
    if not train:
        raise FatalStageError(f"every task of {rt.config.TASK_SOURCE} is held out: nothing is left to train on")
    return train, [_Job(sample_id(rt.round, first + i), task) for i, task in enumerate(to_answer)]


def _fix_proposed_heldout(rt: AgentRuntime, jobs: list[_Job]) -> None:
    """Self-instruct: the first proposals of the run are its pool; hold some of them out."""
    if jobs:
        try:
            fix_heldout(rt.run_dir, [job.task.task_id for job in jobs], rt.config.VAL_RATIO, rt.config.SEED)
        except HeldoutError as exc:
            raise FatalStageError(str(exc)) from None


def main(rt: AgentRuntime) -> None:
    """Generate this round's samples (see the module docstring)."""
    config = rt.config
    home = os.environ.get("AUTOTRAIN_HOME")
    try:
        pool = task_pool(config.TASK_SOURCE, config.TASK_DIFFICULTY, home)
        table = price_table(rt.run_dir, home)
    except (TaskSourceError, PricingError) as exc:
        raise FatalStageError(str(exc)) from None
    if config.MAX_COST_USD is not None and lookup_price(config.TEACHER_MODEL, table) is None:
        raise FatalStageError(
            f"MAX_COST_USD is set but the cost of TEACHER_MODEL {config.TEACHER_MODEL!r} is unknown: add its "
            "prices to pricing.json, or clear MAX_COST_USD"
        )
    files = RoundFiles.of(rt.run_dir, rt.round).ensure()
    run = _Generation(rt, files, table, default_redactor())
    if config.RUN_UNIT_TESTS == "1":
        pool = _without_humaneval(rt, pool)
    heldout_jobs: list[_Job] = []
    if config.TASK_SOURCE != "self-instruct":
        pool, heldout_jobs = _heldout_split(rt, pool, run.total)
        run.heldout = len(heldout_jobs)
        run.total += run.heldout
    run.reconcile()
    rt.checkpoint()
    if len(run.done) + len(run.failed) < run.total and run.should_continue():
        intents = IntentLog(files.requests)
        try:
            teacher = open_teacher(config, intents)
        except TeacherUnavailable as exc:
            intents.close()
            raise FatalStageError(str(exc)) from None
        run.account.watch_endpoints(teacher)
        try:
            if config.TASK_SOURCE == "self-instruct":
                jobs = run.propose(teacher, pool)
                _fix_proposed_heldout(rt, jobs)
            else:
                tasks = tasks_for_round(pool, rt.round, config.SAMPLES_PER_ROUND, config.SEED)
                jobs = [_Job(sample_id(rt.round, i), task) for i, task in enumerate(tasks)] + heldout_jobs
            run.solve(teacher, jobs)
        finally:
            teacher.close()
            intents.close()
            run.flush()
    if run.stopping:
        raise StopRequested()
    if run.budget_hit:
        rt.progress(
            f"{run.account.budget_reached(run.refused)}; generation stopped with {len(run.done)} of "
            f"{run.total} samples written",
            level="warn",
        )
    rt.progress(
        f"generate round {rt.round} complete: {len(run.done)}/{run.total} written{run.incl()}, {len(run.failed)} failed; "
        f"{run.account.summary()}",
        artifacts=[rt.relative(files.raw)] if files.raw.exists() else [],
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
