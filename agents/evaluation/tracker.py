"""Eval results to the tracker the trainer reports to (``REPORT_TO``): TensorBoard, MLflow or W&B.

The trainer's curves go through the HF Trainer's own ``report_to``; this sends each round's eval outcome
to the same place, with the tags :func:`~heidi_engine.bus.scalars.eval_scalars` names
(``eval/<variant>/<metric>``, step = round). TensorBoard writes to ``runs/<id>/tracking/round_N/`` beside
the trainer's events; MLflow and W&B use their usual environment (``MLFLOW_TRACKING_URI``,
``WANDB_PROJECT``, ...). A tracker that is not installed costs a warning, never the round.
"""

from __future__ import annotations

import importlib
from typing import Any

from heidi_engine.agents.layout import tracking_dir
from heidi_engine.agents.runtime import AgentRuntime
from heidi_engine.bus.scalars import TensorBoardUnavailable, eval_scalars, write_tensorboard
from heidi_engine.bus.state import EvalSample

__all__ = ["log_eval"]


def _mlflow(module: Any, rt: AgentRuntime, metrics: dict[str, float], step: int) -> None:
    with module.start_run(run_name=rt.run_id, nested=module.active_run() is not None):
        module.log_metrics(metrics, step=step)


def _wandb(module: Any, rt: AgentRuntime, metrics: dict[str, float], step: int) -> None:
    run = module.run or module.init(name=f"{rt.run_id}-eval", group=rt.run_id, reinit=True)
    run.log({**metrics, "round": step})


def log_eval(rt: AgentRuntime, sample: EvalSample) -> None:
    """Send ``sample`` to ``REPORT_TO`` (nothing when it is "none")."""
    tracker = rt.config.REPORT_TO
    if tracker == "none":
        return
    scalars = eval_scalars(sample)
    try:
        if tracker == "tensorboard":
            write_tensorboard(tracking_dir(rt.run_dir, sample.round), scalars)
            return
        module = importlib.import_module(tracker)
        metrics = {tag: value for tag, _, value in scalars}
        (_mlflow if tracker == "mlflow" else _wandb)(module, rt, metrics, sample.round)
    except (ImportError, TensorBoardUnavailable):
        rt.progress(
            f"REPORT_TO={tracker}, but {tracker} is not installed: eval results not logged there",
            level="warn",
        )
    except Exception as exc:  # a tracker's own failure (server down, no login) must not fail the round
        rt.progress(f"REPORT_TO={tracker}: logging the eval results failed: {exc}", level="warn")
