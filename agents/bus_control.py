"""The bus-connected :class:`~heidi_engine.agents.training.callback.TrainerControl`: trainer steps on the bus.

Every optimizer step becomes a trainer sample (the loss curve and gauges in ``metrics.jsonl`` and the
state) and counts once in the ``train_step`` counter. The counter travels in progress events batched to
at most one per :data:`FLUSH_STEPS` steps or :data:`FLUSH_S` seconds, and is always flushed before the
trainer parks, stops, checkpoints or finishes, so the event log stays small while the sum of the deltas
is exactly the number of steps trained. A restarted trainer that replays steps from a checkpoint does not
count them twice: the control starts from the count the supervisor already recorded for the round.

A user's own Hugging Face Trainer script reports to a running supervisor with two lines::

    from heidi_engine.agents.bus_control import bus_callback
    trainer.add_callback(bus_callback())

Started by the supervisor (``AUTOTRAIN_RUN_ID`` set) it is that stage's agent; otherwise it attaches to
the active run of the supervisor of ``AUTOTRAIN_HOME`` (else the current directory) as an *external
trainer*, ``external:NAME``: its samples, steps and events are its own, shown as such, and never counted
as the pipeline's (docs/callback.md). With no supervisor or no active run it logs one warning and does
nothing.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerControl as HFTrainerControl
from transformers import TrainerState, TrainingArguments

from heidi_engine.agents.runtime import AgentRuntime, FatalStageError, run_config_from_json
from heidi_engine.agents.training.callback import (
    BusReportingCallback,
    NullControl,
    StepMetrics,
    TrainerControl,
)
from heidi_engine.bus.connection import ConnectionFileError, read_bus_info, use_bus_file
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.ledger import load_ledger
from heidi_engine.bus.state import ACTIVE_STATUSES, MAX_RANKS, TrainerSample

__all__ = [
    "FLUSH_S",
    "FLUSH_STEPS",
    "BusTrainerControl",
    "bus_callback",
    "connect_trainer_control",
    "counted_train_steps",
    "external_name",
]

log = logging.getLogger(__name__)

FLUSH_STEPS = 10
FLUSH_S = 2.0
_STATUS_TIMEOUT_S = 3.0
_LEVELS = {"info": "info", "warning": "warn", "warn": "warn", "error": "error", "success": "success"}
_warned: set[str] = set()


def counted_train_steps(run_dir: Path, round_no: int) -> int:
    """The ``train_step`` count the supervisor recorded for ``round_no`` (what a restart must not recount)."""
    return load_ledger(run_dir).totals("train", round_no).counters.get("train_step", 0)


def _finite(value: object) -> float | None:
    # JSON has no NaN or Infinity: a diverged loss is shown as missing rather than breaking metrics.jsonl.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _peaks(value: object) -> list[int] | None:
    if not isinstance(value, list) or not value or len(value) > MAX_RANKS:
        return None
    return [int(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0] or None


class BusTrainerControl:
    """A :class:`TrainerControl` over an :class:`AgentRuntime`.

    ``counted_steps`` is how many steps of this round the supervisor has already counted (see
    :func:`counted_train_steps`); steps up to it are published as samples but not counted again.
    ``owns_runtime`` makes :meth:`close` close the runtime too. ``source`` (``external:NAME``) makes it an
    external trainer's: its samples carry the source, and it counts nothing into the run.
    """

    def __init__(
        self,
        rt: AgentRuntime,
        *,
        counted_steps: int = 0,
        flush_steps: int = FLUSH_STEPS,
        flush_s: float = FLUSH_S,
        clock: Callable[[], float] = time.monotonic,
        owns_runtime: bool = False,
        source: str = "",
    ) -> None:
        if counted_steps < 0 or flush_steps < 1 or flush_s < 0:
            raise ValueError(
                f"counted_steps must be >= 0, flush_steps >= 1 and flush_s >= 0; "
                f"got {counted_steps}, {flush_steps}, {flush_s}"
            )
        self.rt = rt
        self._counted_through = counted_steps
        self._flush_steps = flush_steps
        self._flush_s = flush_s
        self._clock = clock
        self._owns_runtime = owns_runtime
        self.source = source
        self._said = f"{source.removeprefix('external:')}: " if source else ""  # whose words an event carries
        self._pending = 0
        self._last_flush = clock()
        self._last: StepMetrics = {}
        self._closed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BusTrainerControl:
        """The control of a trainer started by the supervisor as its ``train`` stage (``AUTOTRAIN_*``)."""
        rt = AgentRuntime.from_env(env)
        return cls(rt, counted_steps=counted_train_steps(rt.run_dir, rt.round), owns_runtime=True)

    @property
    def steps_counted(self) -> int:
        """The highest step counted so far (flushed or pending)."""
        return self._counted_through

    # -- TrainerControl ----------------------------------------------------------------------------

    def publish_step(self, metrics: StepMetrics) -> None:
        """Publish the step's sample; count it (once) into the batched ``train_step`` counter."""
        step = int(_finite(metrics.get("step")) or 0)
        total = int(_finite(metrics.get("total")) or 0)
        self.rt.sample(
            TrainerSample(
                round=self.rt.round,
                step=step,
                total=total,
                loss=_finite(metrics.get("loss")),
                learning_rate=_finite(metrics.get("learning_rate")),
                grad_norm=_finite(metrics.get("grad_norm")),
                tokens_per_s=_finite(metrics.get("tokens_per_s")),
                samples_per_s=_finite(metrics.get("samples_per_s")),
                eta_s=_finite(metrics.get("eta_s")),
                memory_mb=_finite(metrics.get("gpu_mem_mb")),
                rank_peak_mb=_peaks(metrics.get("rank_peak_mb")),
                source=self.source,
            )
        )
        self._last = metrics
        if step > self._counted_through:
            self._pending += step - self._counted_through
            self._counted_through = step
        if self._pending >= self._flush_steps or self._clock() - self._last_flush >= self._flush_s:
            self.flush()

    def should_stop(self) -> bool:
        """True once the supervisor asked the run to stop (the count is flushed first)."""
        stop = self.rt.stop_requested()
        if stop:
            self.flush()
        return stop

    def wait_if_paused(self) -> None:
        """Park while the run is paused (reported to the supervisor, which then shows ``paused``)."""
        if self.pause_requested():
            # The counters must be complete while the run shows paused.
            self.flush()
        self.rt.wait_if_paused()

    def on_checkpoint(self, step: int, path: str) -> None:
        """A progress event naming the checkpoint (relative to the run folder when it is inside it)."""
        self.flush()
        where = Path(path)
        try:
            shown = self.rt.relative(where)
            artifacts = [shown]
        except ValueError:
            shown, artifacts = str(where), []
        self.rt.progress(f"{self._said}checkpoint at step {step}: {shown}", artifacts=artifacts)

    def on_event(self, level: str, message: str) -> None:
        """Forward a trainer message as an event (``warning`` becomes ``warn``)."""
        self.flush()
        mapped = _LEVELS.get(level, "info")
        if mapped == "error":
            self.rt.emit("error", self._said + message, level="error", error=message)
        else:
            self.rt.progress(self._said + message, level=mapped)

    # -- batching and lifetime ---------------------------------------------------------------------

    def flush(self) -> None:
        """Send the steps counted since the last flush in one progress event (nothing when none)."""
        self._last_flush = self._clock()
        if self._pending == 0 or self._closed:
            return
        steps, self._pending = self._pending, 0
        last = self._last
        loss = _finite(last.get("loss"))
        text = f"{self._said}trained to step {last.get('step')}/{last.get('total')}"
        if loss is not None:
            text += f", loss {loss:.4f}"
        # An external trainer's steps are its own (its samples): the pipeline's train_step never has them.
        self.rt.progress(text, counters={} if self.source else {"train_step": steps})

    def close(self) -> None:
        """Flush, and close the runtime when this control owns it (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        except BusError as exc:
            log.warning("could not send the last train_step count: %s", exc)
        self._closed = True
        if self._owns_runtime:
            self.rt.close()

    def pause_requested(self) -> bool:
        """Whether the next step boundary will park (non-blocking)."""
        return self.rt.pause_requested()


class _DetachedControl(NullControl):
    """No supervisor to report to: every call is a no-op (the reason was logged once)."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _warn_once(reason: str) -> _DetachedControl:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("trainer metrics are not reported: %s", reason)
    return _DetachedControl()


def external_name(name: str | None = None, argv0: str | None = None) -> str:
    """The NAME of ``external:NAME``: ``name``, else the script's file name, made of the characters a
    source name may hold (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    raw = name or Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "")).stem
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip(".-_")[:64]
    return cleaned or "script"


def _attach(home: Path, name: str | None = None) -> BusTrainerControl | _DetachedControl:
    try:
        info = read_bus_info(home)
    except ConnectionFileError as exc:
        return _warn_once(str(exc))
    try:
        with ControlClient(info, sender="trainer-callback", timeout_s=_STATUS_TIMEOUT_S) as client:
            status = client.call("status")
    except BusError as exc:
        return _warn_once(f"the supervisor of {home} does not answer ({exc})")
    run_id, run_status = status.get("run_id"), status.get("status")
    if not run_id or run_status not in ACTIVE_STATUSES:
        return _warn_once(f"the supervisor of {home} has no active run (status {run_status})")
    if info.remote:
        # A script on another machine (AUTOTRAIN_BUS): the run's files are not here; the supervisor's
        # snapshot carries the run's configuration, and artifact paths are relative to this folder.
        run_dir = Path.cwd()
        try:
            with ControlClient(info, sender="trainer-callback", timeout_s=_STATUS_TIMEOUT_S) as client:
                run_config = client.call("snapshot")["state"].get("config") or {}
            config = run_config_from_json(json.dumps(run_config), "the supervisor's run configuration")
        except (BusError, FatalStageError, KeyError, TypeError) as exc:
            return _warn_once(f"cannot get the run configuration from the supervisor: {exc}")
    else:
        run_dir = Path(info.home) / "runs" / str(run_id)
        config_json = run_dir / "config.json"
        try:
            config = run_config_from_json(config_json.read_text(encoding="utf-8"), str(config_json))
        except OSError as exc:
            return _warn_once(f"cannot read the run configuration {config_json}: {exc}")
        except FatalStageError as exc:
            return _warn_once(str(exc))
    rt = AgentRuntime(
        info,
        stage="external",
        run_id=str(run_id),
        round_no=max(int(status.get("current_round") or 0), 0),
        run_dir=run_dir,
        config=config,
    )
    # An attached script trains on its own, beside the pipeline: it reports as itself and counts nothing
    # of the pipeline's (whose train stage must never take its steps for its own).
    return BusTrainerControl(rt, owns_runtime=True, source=f"external:{external_name(name)}")


def connect_trainer_control(
    home: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, *, name: str | None = None
) -> TrainerControl:
    """The control for a trainer in this process: the stage's own when started by the supervisor,
    else attached to the active run of ``home`` (default ``AUTOTRAIN_HOME``, else the current
    directory; a remote supervisor when ``AUTOTRAIN_BUS`` names a client connection file), else a
    no-op after one logged warning. It is flushed and closed at process exit.
    On a rank other than 0 of a torchrun/accelerate job (``RANK`` set and not 0) it is a silent no-op."""
    env = os.environ if env is None else env
    control: BusTrainerControl | _DetachedControl
    if env.get("RANK", "0") != "0":
        # Under torchrun/accelerate rank 0 alone talks to the supervisor; the others follow its verdicts.
        return _DetachedControl()
    if env.get("AUTOTRAIN_RUN_ID"):
        try:
            control = BusTrainerControl.from_env(env)
        except (FatalStageError, ConnectionFileError, BusError) as exc:
            control = _warn_once(f"cannot reach the supervisor that started this process: {exc}")
    else:
        control = _attach(Path(home or env.get("AUTOTRAIN_HOME") or os.getcwd()), name)
    atexit.register(control.close)
    return control


class _FlushingCallback(BusReportingCallback):
    """Flushes the batched step count when training ends, so a script's last steps are counted."""

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        super().on_train_end(args, state, control, **kwargs)
        flush = getattr(self._control, "flush", None)
        if flush is not None:
            flush()


def bus_callback(
    home: str | os.PathLike[str] | None = None, *, bus: str | os.PathLike[str] | None = None, name: str | None = None
) -> BusReportingCallback:
    """A ``TrainerCallback`` for any HF Trainer: ``trainer.add_callback(bus_callback())``.

    Use ``logging_steps=1`` to get the loss of every step. See :func:`connect_trainer_control` for
    where it reports. On another machine, ``bus`` (or ``AUTOTRAIN_BUS``) names the client connection
    file from ``autotrain-supervisor --issue-client``; a bad file raises :class:`ConnectionFileError`.
    ``name`` is how an attached script is shown (``external:NAME``; default: the script's file name).
    """
    if bus is not None:
        use_bus_file(bus)
    return _FlushingCallback(connect_trainer_control(home, name=name))
