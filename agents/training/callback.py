"""A Hugging Face ``TrainerCallback`` that reports every optimizer step and honours pause and stop.

It talks to the outside world only through the small :class:`TrainerControl` protocol, so it knows
nothing of the bus. The bus-connected control object lives in ``heidi_engine.agents.runtime``
(provided by the runtime layer); any object with the five methods below works, which is how an
external HF-Trainer-based script reports to the supervisor::

    control = ...  # e.g. the bus-connected control from heidi_engine.agents.runtime
    trainer.add_callback(BusReportingCallback(control))

Per optimizer step it publishes exactly one sample (see :meth:`BusReportingCallback.on_step_end` for
the keys), then parks in ``control.wait_if_paused()`` (the step boundary: weights, optimizer state and
GPU memory stay put), then, if ``control.should_stop()``, asks the Trainer to save a checkpoint and
leave the training loop. It adds no device synchronisation of its own: the loss, learning rate and
grad norm come from the Trainer's own log of the step (``logging_steps=1`` gives one per step).

Under torchrun or accelerate (a process group of more than one rank) only rank 0 uses its control:
it publishes, and its pause/stop verdict reaches every rank through one small all-reduce per step
(:mod:`heidi_engine.agents.training.collective`), so all ranks park, continue or stop at the same step. A control
with a non-blocking ``pause_requested()`` (as the bus control has) spares the park handshake on steps
without a pause.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import TrainerCallback, TrainerState, TrainingArguments
from transformers import TrainerControl as HFTrainerControl
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from heidi_engine.agents.training.collective import HOLD, RUN, STOP, StepCollective, world

__all__ = ["BusReportingCallback", "NullControl", "TrainerControl"]

_MB = float(1 << 20)

Metric = float | int | list[int] | None
StepMetrics = Mapping[str, Metric]


@runtime_checkable
class TrainerControl(Protocol):
    """What a trainer needs from its supervisor: a place to report and the pause/stop switches."""

    def publish_step(self, metrics: StepMetrics) -> None:
        """Report one optimizer step (one call per step, in step order)."""

    def should_stop(self) -> bool:
        """True once a stop was requested; the trainer then saves and returns."""

    def wait_if_paused(self) -> None:
        """Block while paused; return when resumed or stopped."""

    def on_checkpoint(self, step: int, path: str) -> None:
        """A resumable checkpoint for ``step`` is complete at ``path``."""

    def on_event(self, level: str, message: str) -> None:
        """A human-readable event (``level``: info, warning or error)."""


class NullControl:
    """Reports nowhere and never pauses or stops: training without a supervisor (or on a rank but 0)."""

    def pause_requested(self) -> bool:
        return False

    def publish_step(self, metrics: StepMetrics) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def wait_if_paused(self) -> None:
        pass

    def on_checkpoint(self, step: int, path: str) -> None:
        pass

    def on_event(self, level: str, message: str) -> None:
        pass


def _trainer_counts_tokens(args: TrainingArguments) -> bool:
    return args.include_num_input_tokens_seen not in ("no", False)


class BusReportingCallback(TrainerCallback):
    """Publishes a trainer sample per optimizer step and parks/stops at step boundaries.

    Token throughput comes from ``state.num_input_tokens_seen`` when the script enabled
    ``include_num_input_tokens_seen``; otherwise from ``tokens_seen``, a counter of non-padding tokens
    collated so far (``train_lora`` passes its collator's, which costs no device sync); with neither,
    ``tokens_per_s`` is None. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        control: TrainerControl,
        *,
        tokens_seen: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(control, TrainerControl):
            raise TypeError(
                f"control must provide publish_step, should_stop, wait_if_paused, on_checkpoint and "
                f"on_event; got {type(control).__name__}"
            )
        self._control = control
        self._tokens_seen = tokens_seen
        self._clock = clock
        self._pending_step: int | None = None
        self._step_lr: float | None = None
        self._stop_requested = False
        self._collective: StepCollective | None = None
        self._reset(None, None)

    @property
    def stop_requested(self) -> bool:
        """Whether this callback ended training because the control asked to stop."""
        return self._stop_requested

    def _reset(self, args: TrainingArguments | None, state: TrainerState | None) -> None:
        self._last_t = self._clock()
        self._last_tokens = self._token_count(args, state)
        self._active_s = 0.0
        self._steps_timed = 0
        self._on_gpu = args is not None and args.device.type == "cuda"
        self._samples_per_step = (
            args.train_batch_size * args.gradient_accumulation_steps * args.world_size if args else 0
        )

    def _token_count(self, args: TrainingArguments | None, state: TrainerState | None) -> int | None:
        if args is not None and state is not None and _trainer_counts_tokens(args):
            return int(state.num_input_tokens_seen)
        return self._tokens_seen() if self._tokens_seen is not None else None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        self._pending_step = None
        self._stop_requested = False
        self._reset(args, state)
        # Under torchrun/accelerate (the Trainer has set the process group up by now): decide together.
        self._collective = StepCollective(args.device) if world()[1] > 1 else None

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        lr_scheduler = kwargs.get("lr_scheduler")
        # Read before this step's scheduler update: the rate this step trains with, as the Trainer logs it.
        self._step_lr = float(lr_scheduler.get_last_lr()[0]) if lr_scheduler is not None else None

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        """Publish the step, or defer to :meth:`on_log` when the Trainer is about to log it.

        Sample keys: step, total, loss, learning_rate, grad_norm, tokens_per_s, samples_per_s,
        step_time_s, eta_s, epoch, gpu_mem_mb, gpu_mem_peak_mb (torch allocator, None off GPU),
        rank_peak_mb (every rank's peak memory in MiB, by rank: the allocator's on a GPU, the process's
        peak resident size on CPU).
        Steps the Trainer does not log (``logging_steps`` > 1 in a user's script) carry loss and
        grad_norm None and the scheduler's learning rate read at the step's start.
        """
        if self._pending_step is not None:
            # The previous step's log never came; publish it without loss rather than drop it.
            self._finish(args, state, control, self._pending_step, {})
        if control.should_log:
            self._pending_step = state.global_step
            return
        self._finish(args, state, control, state.global_step, {})

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: HFTrainerControl,
        logs: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._pending_step is None or self._pending_step != state.global_step:
            return
        if logs is None or "loss" not in logs:
            return
        self._finish(args, state, control, self._pending_step, logs)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        path = os.path.join(str(args.output_dir), f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        self._control.on_checkpoint(state.global_step, path)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: HFTrainerControl, **kwargs: Any
    ) -> None:
        if self._pending_step is not None:
            self._finish(args, state, control, self._pending_step, {})

    def _finish(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: HFTrainerControl,
        step: int,
        logs: Mapping[str, float],
    ) -> None:
        self._pending_step = None
        if self._collective is None:
            self._control.publish_step(self._sample(args, state, step, logs, rank_peaks=[round(self._peak_mb())]))
            self._control.wait_if_paused()
            stop = self._control.should_stop()
        else:
            stop = self._finish_ranked(args, state, step, logs)
        if stop and step < state.max_steps:
            self._stop_requested = True
            control.should_training_stop = True
            control.should_save = True
        # Time parked (or spent by the control) is not training time: restart the step clock here.
        self._last_t = self._clock()

    def _verdict(self) -> int:
        if self._control.should_stop():
            return STOP
        pause_requested = getattr(self._control, "pause_requested", None)
        # A control that cannot say whether a pause is pending is asked to park at every step.
        return HOLD if pause_requested is None or pause_requested() else RUN

    def _finish_ranked(
        self, args: TrainingArguments, state: TrainerState, step: int, logs: Mapping[str, float]
    ) -> bool:
        """The step under torchrun/accelerate: rank 0 reports and decides, every rank follows."""
        assert self._collective is not None
        collective = self._collective
        main = collective.rank == 0
        tokens = self._token_count(args, state)
        # The Trainer's own token count is already gathered over the ranks; the collator's is per rank.
        summed = tokens is not None and not _trainer_counts_tokens(args)
        local = tokens - self._last_tokens if tokens is not None and self._last_tokens is not None else 0
        verdict, total = collective.exchange(
            self._verdict() if main else RUN, local if summed else 0, self._peak_mb()
        )
        if main:
            delta = total if summed else None
            sample = self._sample(args, state, step, logs, tokens_delta=delta, rank_peaks=collective.peak_mb)
            self._control.publish_step(sample)
        else:
            self._last_tokens = tokens
        if verdict == HOLD:
            verdict = collective.hold(self._control.wait_if_paused, self._verdict)
        return verdict == STOP

    def _sample(
        self,
        args: TrainingArguments,
        state: TrainerState,
        step: int,
        logs: Mapping[str, float],
        *,
        tokens_delta: int | None = None,
        rank_peaks: list[int] | None = None,
    ) -> dict[str, Metric]:
        now = self._clock()
        elapsed = max(now - self._last_t, 1e-9)
        self._active_s += elapsed
        self._steps_timed += 1
        tokens = self._token_count(args, state)
        tokens_per_s = None
        if tokens_delta is not None:
            tokens_per_s = tokens_delta / elapsed
        elif tokens is not None and self._last_tokens is not None:
            tokens_per_s = (tokens - self._last_tokens) / elapsed
        self._last_tokens = tokens
        learning_rate = logs.get("learning_rate", self._step_lr)
        remaining = max(state.max_steps - step, 0)
        gpu_mem = gpu_peak = None
        if self._on_gpu:
            # Allocator bookkeeping on the host: no device sync.
            gpu_mem = torch.cuda.memory_allocated() / _MB
            gpu_peak = torch.cuda.max_memory_allocated() / _MB
        return {
            "step": step,
            "total": state.max_steps,
            "loss": logs.get("loss"),
            "learning_rate": learning_rate,
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_s": tokens_per_s,
            "samples_per_s": self._samples_per_step / elapsed,
            "step_time_s": elapsed,
            "eta_s": self._active_s / self._steps_timed * remaining,
            "epoch": state.epoch,
            "gpu_mem_mb": gpu_mem,
            "gpu_mem_peak_mb": gpu_peak,
            "rank_peak_mb": rank_peaks,
        }

    def _peak_mb(self) -> float:
        """This process's peak memory: the allocator's on its GPU, the peak resident size on CPU."""
        if self._on_gpu:
            return torch.cuda.max_memory_allocated() / _MB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
