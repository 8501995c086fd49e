"""The train stage on several processes: TRAIN_NPROC ranks under torchrun or accelerate, as one agent.

The agent the supervisor started (its process group holds everything below) runs the launcher as its
child and waits. Every rank runs the stage's ``main``; rank 0 alone is the stage on the bus, speaking
for the agent's pid (``AUTOTRAIN_AGENT_PID``), so the supervisor sees one agent whatever the number of
ranks. Rank 0 writes its exit status to a file, which the agent then exits with: the launcher itself
turns any rank's failure into a bare 1, which would lose "stopped" (75) and "permanent failure". A rank
that dies makes the launcher end the others; the agent then exits 1 and the supervisor's restart
resumes the whole group from the last checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from heidi_engine.agents.runtime import (
    AgentRuntime,
    FatalStageError,
    StopRequested,
    run_config_from_json,
    run_stage,
)
from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.exit_status import EXIT_FATAL, EXIT_STOPPED

__all__ = ["STATUS_ENV", "RankRuntime", "launch_command", "launched_rank", "run_launched", "run_rank"]

log = logging.getLogger(__name__)

STATUS_ENV = "AUTOTRAIN_RANK0_STATUS"
_LAUNCHER_PACKAGES = {"torchrun": "torch", "accelerate": "accelerate"}


def launched_rank(env: Mapping[str, str] | None = None) -> int | None:
    """This process's rank when a launcher started it (``RANK`` set), else None."""
    rank = (os.environ if env is None else env).get("RANK")
    return int(rank) if rank is not None and rank.isdigit() else None


def launch_command(launcher: str, nproc: int, module: str, *, on_gpu: bool) -> list[str]:
    """The command that starts ``nproc`` ranks of ``python -m module`` on this machine.

    torchrun (``auto``) finds a free rendezvous port itself (``--standalone``), accelerate with port 0.
    accelerate always gets ``--multi_gpu``, its multi-process launcher (with ``--cpu`` it would start a
    single process); on a machine without CUDA the ranks train on the CPU with gloo all the same.
    ``on_gpu`` is kept for launchers that need to know.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc!r}")
    if launcher in ("auto", "torchrun"):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                "-m", module]  # fmt: skip
    if launcher == "accelerate":
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(nproc),
                "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no",
                "--multi_gpu", "-m", module]  # fmt: skip
    raise ValueError(f'unknown launcher {launcher!r}; expected "auto", "torchrun" or "accelerate"')


def _launcher_problem(launcher: str) -> str | None:
    package = _LAUNCHER_PACKAGES.get("torchrun" if launcher == "auto" else launcher)
    if package is not None and importlib.util.find_spec(package) is None:
        return f"TRAIN_LAUNCHER {launcher!r} needs the {package} package: pip install {package}"
    return None


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_launched(config: AutoTrainConfig, module: str) -> int:
    """Start ``config.TRAIN_NPROC`` ranks of ``module`` and wait; the exit status the agent should end with."""
    problem = _launcher_problem(config.TRAIN_LAUNCHER)
    gpus = _cuda_devices() if problem is None else 0
    if problem is None and 0 < gpus < config.TRAIN_NPROC:
        problem = f"TRAIN_NPROC is {config.TRAIN_NPROC} but this machine has {gpus} CUDA GPUs; one rank per GPU"
    if problem is not None:
        return run_stage(_refuse(problem))
    command = launch_command(config.TRAIN_LAUNCHER, config.TRAIN_NPROC, module, on_gpu=gpus > 0)
    with tempfile.TemporaryDirectory(prefix="autotrain-ranks-") as folder:
        status_file = Path(folder) / "rank0.status"
        env = {**os.environ, "AUTOTRAIN_AGENT_PID": str(os.getpid()), STATUS_ENV: str(status_file)}
        log.info("starting %d training processes: %s", config.TRAIN_NPROC, " ".join(command))
        code = subprocess.call(command, env=env)
        rank0 = status_file.read_text(encoding="ascii").strip() if status_file.is_file() else ""
    if not rank0.isdigit():
        log.error("the launcher exited %s before rank 0 finished: the training group failed", code)
        return 1 if code == 0 else code
    # Rank 0 finished: its status is the stage's, unless another rank failed after it did.
    return int(rank0) if int(rank0) != 0 or code == 0 else 1


def _refuse(problem: str) -> Callable[[AgentRuntime], None]:
    def main(rt: AgentRuntime) -> None:
        raise FatalStageError(problem)

    return main


@dataclass
class RankRuntime:
    """What a rank other than 0 has in place of an :class:`AgentRuntime`: the stage's identity, no bus."""

    config: AutoTrainConfig
    run_dir: Path
    round: int
    resume: bool = False
    attempt: int = 0
    stage: str = field(default="train")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RankRuntime:
        """The stage's identity from the supervisor's ``AUTOTRAIN_*`` variables, as the agent got them."""
        env = os.environ if env is None else env
        try:
            run_dir = Path(env["AUTOTRAIN_RUN_DIR"])
            round_no = int(env["AUTOTRAIN_ROUND"])
        except (KeyError, ValueError) as exc:
            raise FatalStageError(f"not started by the supervisor: missing or bad {exc}") from None
        data = env.get("AUTOTRAIN_CONFIG_DATA")
        if data is None:
            path = Path(env.get("AUTOTRAIN_CONFIG_JSON", run_dir / "config.json"))
            try:
                data = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise FatalStageError(f"cannot read the run configuration {path}: {exc}") from None
        return cls(
            config=run_config_from_json(data, "the run configuration"),
            run_dir=run_dir,
            round=round_no,
            resume=env.get("AUTOTRAIN_RESUME") == "1",
            attempt=int(env.get("AUTOTRAIN_ATTEMPT", "0")),
            stage=env.get("AUTOTRAIN_STAGE", "train"),
        )

    def progress(self, message: str, **kwargs: object) -> None:
        """Rank 0 reports; the others stay quiet."""

    def checkpoint(self) -> None:
        """Pause and stop reach this rank through rank 0's verdicts, not here."""

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder."""
        return str(path.resolve().relative_to(self.run_dir.resolve()))


def _die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, outside the agent's process group, so a kill of
    that group would leave the ranks running (holding their GPUs): the kernel ends a rank with its parent."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the launcher died before the request took effect
        os._exit(1)


def run_rank(main: Callable[[AgentRuntime | RankRuntime], None], rank: int) -> int:
    """Run one rank of the stage; rank 0 through :func:`run_stage` (it writes its status for the agent)."""
    _die_with_launcher()
    if rank == 0:
        code = run_stage(main)
        status_file = os.environ.get(STATUS_ENV)
        if status_file:
            Path(status_file).write_text(f"{code}\n", encoding="ascii")
        return code
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        main(RankRuntime.from_env())
        return 0
    except StopRequested:
        return EXIT_STOPPED
    except FatalStageError as exc:
        log.error("rank %d: %s", rank, exc)
        return EXIT_FATAL
