"""``GET /metrics``: a prometheus_client collector over the HTTP server's latest view of the run.

Names follow the Prometheus naming guide: base units (bytes, seconds, ratios 0–1, watts, degrees
Celsius), ``_total`` only on counters, outcomes as labels rather than separate names
(``autotrain_samples_rejected_total{reason}``, ``autotrain_unit_tests_total{result}``,
``autotrain_teacher_tokens_total{direction}``), the cumulative teacher cost as a counter (left out while
it is unknown), ``autotrain_teacher_parked`` (1 while the generate stage waits out an unreachable teacher,
with when that began and when the next probe goes out as ``..._timestamp_seconds``), each endpoint of a teacher pool under ``autotrain_teacher_endpoint_*{endpoint}`` (named by
scheme://host:port/path, never credentials), and ``autotrain_build_info`` / ``autotrain_run_info`` info metrics. Every scrape reads one
frozen snapshot, so the families are consistent with each other.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from heidi_engine.bus.build import version
from heidi_engine.bus.state import STATUSES, EvalScores, RunState
from heidi_engine.ui.status_view import Health, round_cost
from heidi_engine.ui.viewer import View

__all__ = ["CONTENT_TYPE", "MetricsCollector", "exposition", "stage_durations"]

# The classic text format every Prometheus version scrapes (what generate_latest writes for our names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_MIB = 1024 * 1024
# Run counters that are one outcome of a labelled family: counter -> (family, label, value).
_LABELLED: dict[str, tuple[str, str, str]] = {
    "teacher_generated": ("teacher_samples", "outcome", "generated"),
    "teacher_failed": ("teacher_samples", "outcome", "failed"),
    "rejected_schema": ("samples_rejected", "reason", "schema"),
    "rejected_secret": ("samples_rejected", "reason", "secret"),
    "rejected_dedup": ("samples_rejected", "reason", "dedup"),
    "test_pass": ("unit_tests", "result", "pass"),
    "test_fail": ("unit_tests", "result", "fail"),
}
_FAMILY_HELP = {
    "teacher_samples": "Samples asked of the teacher, by outcome.",
    "samples_rejected": "Generated samples rejected by validation, by reason.",
    "unit_tests": "Unit tests run on generated samples, by result.",
}
_USAGE = {
    "requests_sent": ("teacher_requests", "Requests sent to the teacher API."),
    "rate_limits_hit": ("teacher_rate_limits", "Teacher API answers that were rate limits."),
    "retries": ("teacher_retries", "Teacher API requests retried."),
}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _parse_ts(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def stage_durations(state: RunState) -> dict[str, float]:
    """Seconds the latest finished run of each stage took, from the stage_start/stage_end events in view."""
    started: dict[tuple[str, int], datetime] = {}
    durations: dict[str, float] = {}
    for record in state.recent_events:
        stage, when = record.get("stage"), _parse_ts(record.get("ts"))
        if not isinstance(stage, str) or when is None:
            continue
        key = (stage, int(record.get("round") or 0))
        if record.get("event_type") == "stage_start":
            started[key] = when
        elif record.get("event_type") == "stage_end" and key in started:
            durations[stage] = max(0.0, (when - started.pop(key)).total_seconds())
    return durations


def _single(family: GaugeMetricFamily | CounterMetricFamily, value: object) -> Iterator[Metric]:
    """``family`` with one unlabelled sample, or none (the family still listed) while the value is unknown."""
    number = _number(value)
    if number is not None:
        family.add_metric([], number)
    yield family


def _gauge(name: str, documentation: str, value: object) -> Iterator[Metric]:
    return _single(GaugeMetricFamily(f"autotrain_{name}", documentation), value)


def _counter(name: str, documentation: str, value: object) -> Iterator[Metric]:
    """A counter: prometheus_client adds the ``_total``."""
    return _single(CounterMetricFamily(f"autotrain_{name}", documentation), value)


def _endpoint_families(state: RunState) -> Iterator[Metric]:
    """A teacher pool's endpoints: their share of the usage, errors, latency, load and whether each is in."""
    label = ["endpoint"]
    requests = CounterMetricFamily("autotrain_teacher_endpoint_requests", "Requests sent, by endpoint.", labels=label)
    tokens = CounterMetricFamily("autotrain_teacher_endpoint_tokens", "Tokens, by endpoint and direction.",
                                 labels=[*label, "direction"])  # fmt: skip
    cost = CounterMetricFamily("autotrain_teacher_endpoint_cost_usd", "Estimated cost, by endpoint (left out "
                               "while unknown).", labels=label)  # fmt: skip
    errors = CounterMetricFamily("autotrain_teacher_endpoint_errors", "Failed attempts (connection, timeout, "
                                 "5xx), by endpoint.", labels=label)  # fmt: skip
    latency = GaugeMetricFamily("autotrain_teacher_endpoint_latency_seconds", "Reply latency percentiles of "
                                "recent good replies, by endpoint.", labels=[*label, "quantile"])  # fmt: skip
    in_flight = GaugeMetricFamily("autotrain_teacher_endpoint_in_flight", "Requests in flight, by endpoint.",
                                  labels=label)  # fmt: skip
    up = GaugeMetricFamily("autotrain_teacher_endpoint_up", "1 while the endpoint takes requests, 0 while it "
                           "is taken out after repeated failures.", labels=label)  # fmt: skip
    for name, entry in sorted(state.teacher_endpoints.items()):
        usage = entry.usage
        requests.add_metric([name], float(_number(usage.get("requests_sent")) or 0.0))
        tokens.add_metric([name, "input"], float(_number(usage.get("input_tokens")) or 0.0))
        tokens.add_metric([name, "output"], float(_number(usage.get("output_tokens")) or 0.0))
        spent = round_cost(usage.get("estimated_cost_usd"))
        if spent is not None:
            cost.add_metric([name], float(spent))
        errors.add_metric([name], float(entry.errors))
        for quantile, value in (("0.5", entry.latency_p50_s), ("0.95", entry.latency_p95_s)):
            if value is not None:
                latency.add_metric([name, quantile], value)
        in_flight.add_metric([name], float(entry.in_flight))
        up.add_metric([name], 0.0 if entry.out_for_s > 0 else 1.0)
    yield from (requests, tokens, cost, errors, latency, in_flight, up)


class MetricsCollector:
    """A custom collector: each ``collect`` builds every family from ``snapshot()``'s (view, health)."""

    def __init__(self, snapshot: Callable[[], tuple[View, Health]], refused: int | None = None) -> None:
        self.snapshot = snapshot
        self.refused = refused

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape."""
        view, health = self.snapshot()
        state = view.state
        # A parked teacher degrades the health, not the supervisor's reachability (AutoTrainSupervisorDown's).
        outage = state.teacher_outage
        up = health.state == "ok" or (outage is not None and health.reason == outage.describe())
        yield InfoMetricFamily(
            "autotrain_build",
            "Version of the AutoTrain supervisor serving these metrics.",
            value={"version": version(), "python": platform.python_version()},
        )
        yield GaugeMetricFamily(
            "autotrain_up", "1 when the supervisor is reachable and was heard within 3 s.",
            value=1.0 if up else 0.0,
        )  # fmt: skip
        silence = None if view.silence_s is None else round(view.silence_s, 3)
        yield from _gauge("supervisor_silence_seconds", "Seconds since the supervisor was last heard.", silence)
        yield from self._run(state)
        yield from self._teacher(state)
        yield from _endpoint_families(state)
        yield from self._trainer(state)
        yield from self._hardware(state)
        yield from _eval_families(state)
        if self.refused is not None:
            yield CounterMetricFamily(
                "autotrain_http_refused", "Browser control requests and token logins this server refused.",
                value=self.refused,
            )  # fmt: skip

    def _run(self, state: RunState) -> Iterator[Metric]:
        if state.run_id is not None:
            config = state.config
            yield InfoMetricFamily(
                "autotrain_run",
                "The current run and its models.",
                value={
                    "run_id": state.run_id,
                    "base_model": str(config.get("BASE_MODEL", "")),
                    "teacher_model": str(config.get("TEACHER_MODEL", "")),
                },
            )
        status = GaugeMetricFamily("autotrain_run_status", "1 for the run's status, 0 for the others.",
                                   labels=["status"])  # fmt: skip
        for name in STATUSES:
            status.add_metric([name], 1.0 if state.status == name else 0.0)
        yield status
        yield from _gauge("current_round", "Round the run is in (0 before the first).", state.current_round)
        yield from _gauge("total_rounds", "Rounds the run was started with.", state.total_rounds)
        yield from _gauge("budget_usd", "The run's teacher budget (MAX_COST_USD).", state.config.get("MAX_COST_USD"))
        yield from _counter("events", "Events of this run seen by the supervisor.", state.event_count)
        durations = GaugeMetricFamily(
            "autotrain_stage_duration_seconds", "How long the latest finished run of each stage took.",
            labels=["stage"],
        )  # fmt: skip
        for stage, seconds in sorted(stage_durations(state).items()):
            durations.add_metric([stage], seconds)
        yield durations

    def _teacher(self, state: RunState) -> Iterator[Metric]:
        counters = state.counters
        families: dict[str, CounterMetricFamily] = {}
        for counter, (family, label, value) in _LABELLED.items():
            if family not in families:
                families[family] = CounterMetricFamily(f"autotrain_{family}", _FAMILY_HELP[family], labels=[label])
            families[family].add_metric([value], float(counters.get(counter, 0)))
        yield from families.values()
        yield from _counter("samples_validated", "Samples that passed validation.", counters.get("validated_ok", 0))
        yield from _counter("train_steps", "Optimizer steps taken.", counters.get("train_step", 0))
        passed, total = counters.get("eval_pass", 0), counters.get("eval_total", 0)
        evals = CounterMetricFamily("autotrain_eval_problems", "Eval problems run, by result.", labels=["result"])
        evals.add_metric(["pass"], float(passed))
        evals.add_metric(["fail"], float(max(0, total - passed)))
        yield evals
        usage = state.usage
        tokens = CounterMetricFamily("autotrain_teacher_tokens", "Teacher tokens, by direction.", labels=["direction"])
        tokens.add_metric(["input"], float(_number(usage.get("input_tokens")) or 0.0))
        tokens.add_metric(["output"], float(_number(usage.get("output_tokens")) or 0.0))
        yield tokens
        for field, (name, documentation) in _USAGE.items():
            yield from _counter(name, documentation, usage.get(field) or 0)
        # An unknown cost (an unpriced model) is left out rather than shown as 0.
        yield from _counter("teacher_cost_usd", "Estimated teacher cost so far, in USD.",
                            round_cost(usage.get("estimated_cost_usd")))  # fmt: skip
        outage = state.teacher_outage
        yield from _gauge("teacher_parked", "1 while the generate stage is parked on an unreachable teacher.",
                          0 if outage is None else 1)  # fmt: skip
        since, probe = (None, None) if outage is None else (_parse_ts(outage.since), _parse_ts(outage.next_probe_at))
        yield from _gauge("teacher_parked_since_timestamp_seconds", "When the teacher became unreachable "
                          "(Unix time; left out while it is reachable).", since and since.timestamp())  # fmt: skip
        yield from _gauge("teacher_next_probe_timestamp_seconds", "When the parked stage probes the teacher "
                          "next (Unix time; left out while it is reachable).", probe and probe.timestamp())  # fmt: skip

    def _trainer(self, state: RunState) -> Iterator[Metric]:
        trainer = state.trainer
        yield from _gauge("trainer_step", "Current optimizer step of the trainer.", trainer.step)
        yield from _gauge("trainer_steps", "Optimizer steps planned this round.", trainer.total)
        yield from _gauge("trainer_loss", "Latest training loss.", trainer.loss)
        yield from _gauge("trainer_learning_rate", "Latest learning rate.", trainer.learning_rate)
        yield from _gauge("trainer_tokens_per_second", "Training throughput.", trainer.tokens_per_s)
        yield from _gauge("trainer_eta_seconds", "Estimated seconds left in this training stage.", trainer.eta_s)
        # Training scripts reporting beside the run (docs/callback.md), each as itself: never the run's.
        steps = GaugeMetricFamily("autotrain_external_trainer_step", "Latest optimizer step of a training "
                                  "script reporting beside the run.", labels=["source"])  # fmt: skip
        losses = GaugeMetricFamily("autotrain_external_trainer_loss", "Latest loss of a training script "
                                   "reporting beside the run.", labels=["source"])  # fmt: skip
        for source, gauges in state.external.items():
            steps.add_metric([source], gauges.step)
            loss = _number(gauges.loss)
            if loss is not None:
                losses.add_metric([source], loss)
        yield from (steps, losses)

    def _hardware(self, state: RunState) -> Iterator[Metric]:
        labels = ["gpu", "name"]
        families: dict[str, tuple[GaugeMetricFamily, Callable[[Any], float | None]]] = {
            "memory_used_bytes": (GaugeMetricFamily("autotrain_gpu_memory_used_bytes", "GPU memory in use.",
                                                    labels=labels), lambda g: g.vram_used_mb * _MIB),
            "memory_total_bytes": (GaugeMetricFamily("autotrain_gpu_memory_total_bytes", "GPU memory size.",
                                                     labels=labels), lambda g: g.vram_total_mb * _MIB),
            "utilization_ratio": (GaugeMetricFamily("autotrain_gpu_utilization_ratio", "GPU utilisation, 0–1.",
                                                    labels=labels),
                                  lambda g: None if g.util_pct is None else g.util_pct / 100),
            "temperature_celsius": (GaugeMetricFamily("autotrain_gpu_temperature_celsius", "GPU temperature.",
                                                      labels=labels), lambda g: g.temperature_c),
            "power_watts": (GaugeMetricFamily("autotrain_gpu_power_watts", "GPU power draw.", labels=labels),
                            lambda g: g.power_w),
        }  # fmt: skip
        for gpu in state.gpus:
            for family, value_of in families.values():
                value = _number(value_of(gpu))
                if value is not None:
                    family.add_metric([str(gpu.index), gpu.name], value)
        yield from (family for family, _value in families.values())
        host = state.host
        yield from _gauge("host_cpu_utilization_ratio", "Host CPU utilisation, 0–1.",
                          None if host is None else host.cpu_pct / 100)  # fmt: skip
        yield from _gauge("host_memory_used_bytes", "Host memory in use.",
                          None if host is None else host.ram_used_mb * _MIB)  # fmt: skip
        yield from _gauge("host_memory_total_bytes", "Host memory size.",
                          None if host is None else host.ram_total_mb * _MIB)  # fmt: skip


_EVAL_GAUGES = (
    ("eval_val_loss", "Validation loss on the held-out rows.", "val_loss"),
    ("eval_heldout_pass_at_1", "pass@1 on the held-out tasks' own unit tests (a ratio, 0–1).", "val_pass_at_1"),
    ("eval_heldout_tasks", "Held-out rows scored (the n of the held-out rates).", "n_val"),
    ("eval_humaneval_pass_at_1", "pass@1 on the HumanEval subset (a ratio, 0–1).", "humaneval_pass_at_1"),
    ("eval_humaneval_problems", "HumanEval problems scored.", "n_humaneval"),
)


def _eval_families(state: RunState) -> Iterator[Metric]:
    """Each evaluated round's scores, labelled by round and variant (base, adapter), and the best round."""
    scored = [
        ((str(sample.round), variant), scores)
        for sample in state.evals
        for variant, scores in (("base", sample.base), ("adapter", sample.adapter))
        if scores is not None
    ]
    def field(name: str) -> Callable[[EvalScores], Any]:
        return lambda scores: getattr(scores, name)

    def bound(index: int) -> Callable[[EvalScores], Any]:
        return lambda scores: scores.val_ci[index] if scores.val_ci else None

    getters = [(name, doc, field(attr)) for name, doc, attr in _EVAL_GAUGES] + [
        (f"eval_heldout_pass_at_1_{end}", f"{end.capitalize()} end of the Wilson 95% interval of the held-out pass@1.",
         bound(index))
        for end, index in (("lower", 0), ("upper", 1))
    ]
    for name, doc, get in getters:
        family = GaugeMetricFamily(f"autotrain_{name}", doc, labels=["round", "variant"])
        for labels, scores in scored:
            value = _number(get(scores))
            if value is not None:
                family.add_metric(list(labels), value)
        yield family
    yield from _gauge("eval_best_round", "The best round so far (held-out pass@1, then val loss).", state.best_round)
    yield from _paired_families(state)


def _paired_families(state: RunState) -> Iterator[Metric]:
    """Each round's adapter against the base task by task, per task set: tasks gained and lost, McNemar's p."""
    labels = ["round", "set"]
    changed = GaugeMetricFamily("autotrain_eval_paired_tasks", "Tasks the adapter passes and the base fails "
                                "(gained), or the reverse (lost).", labels=[*labels, "change"])  # fmt: skip
    p_value = GaugeMetricFamily("autotrain_eval_paired_p", "McNemar's exact two-sided p of the adapter "
                                "against the base on the same tasks.", labels=labels)  # fmt: skip
    for sample in state.evals:
        adapter = sample.adapter
        pairs = (("heldout", adapter.val_paired), ("humaneval", adapter.humaneval_paired)) if adapter else ()
        for name, pair in pairs:
            if pair is not None:
                changed.add_metric([str(sample.round), name, "gained"], float(pair.gained))
                changed.add_metric([str(sample.round), name, "lost"], float(pair.lost))
                p_value.add_metric([str(sample.round), name], pair.p)
    yield changed
    yield p_value


def exposition(snapshot: Callable[[], tuple[View, Health]], refused: int | None = None) -> bytes:
    """The text exposition of one scrape (a registry of its own, so nothing global is touched);
    ``refused``: the server's count of refused control requests."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(snapshot, refused))
    return generate_latest(registry)
