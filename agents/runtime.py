"""The agent runtime: the one way a stage talks to the supervisor.

A stage gets its run, round and configuration from the environment the supervisor passes, reports with
:meth:`AgentRuntime.emit` / :meth:`progress` / :meth:`sample`, and calls :meth:`checkpoint` at every safe
boundary: that is where a pause parks (reported to the supervisor, which then shows ``paused``) and where
a stop ends the stage (:class:`StopRequested`). :func:`run_stage` maps how a stage ended to the exit
status the supervisor understands. A heartbeat thread, with its own socket, keeps the agent visibly alive
through long model loads and training steps.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from heidi_engine.bus.config import AutoTrainConfig, ConfigError, load_config
from heidi_engine.bus.connection import BusInfo, read_bus_info
from heidi_engine.bus.errors import BusError
from heidi_engine.bus.event import fit_raw_text
from heidi_engine.bus.event_wire import event_record, pack_record
from heidi_engine.bus.exit_status import EXIT_FATAL, EXIT_NOSPACE, EXIT_STOPPED, is_no_space
from heidi_engine.bus.message import AgentStatus
from heidi_engine.bus.publisher import Publisher
from heidi_engine.bus.state import EvalSample, TeacherSample, TrainerSample
from heidi_engine.bus.subscriber import ControlListener

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
_PARK_POLL_S = 0.2


class StopRequested(Exception):
    """Raised by :meth:`AgentRuntime.checkpoint` when the supervisor asked the run to stop."""


class FatalStageError(Exception):
    """A permanent failure: the run fails at once instead of restarting the agent."""


class AgentRuntime:
    """Connection, identity and control of one stage agent."""

    def __init__(
        self,
        info: BusInfo,
        *,
        stage: str,
        run_id: str,
        round_no: int,
        run_dir: Path,
        config: AutoTrainConfig,
        resume: bool = False,
        attempt: int = 0,
        agent_pid: int | None = None,
    ) -> None:
        self.info = info
        self.stage = stage
        self.run_id = run_id
        self.round = round_no
        self.run_dir = run_dir
        self.config = config
        self.resume = resume
        self.attempt = attempt
        # The supervisor knows the agent by the pid it started; a rank under a launcher speaks for it.
        self.pid = os.getpid() if agent_pid is None else agent_pid
        self.sender = f"{stage}:{self.pid}"
        self.phase: Literal["running", "parked", "stopping", "done"] = "running"
        self._publisher = Publisher(info, self.sender)
        self._control = ControlListener(info)
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="agent-heartbeat", daemon=True)
        self._heartbeat.start()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentRuntime:
        """Build the runtime from the variables the supervisor sets (``AUTOTRAIN_*``)."""
        env = os.environ if env is None else env
        try:
            home = env["AUTOTRAIN_HOME"]
            run_dir = Path(env["AUTOTRAIN_RUN_DIR"])
            stage = env["AUTOTRAIN_STAGE"]
            run_id = env["AUTOTRAIN_RUN_ID"]
            round_no = int(env["AUTOTRAIN_ROUND"])
        except (KeyError, ValueError) as exc:
            raise FatalStageError(f"not started by the supervisor: missing or bad {exc}") from None
        data = env.get("AUTOTRAIN_CONFIG_DATA")
        if data is not None:
            config = run_config_from_json(data, "AUTOTRAIN_CONFIG_DATA")
        else:
            config_json = Path(env.get("AUTOTRAIN_CONFIG_JSON", run_dir / "config.json"))
            try:
                config = run_config_from_json(config_json.read_text(encoding="utf-8"), str(config_json))
            except OSError as exc:
                raise FatalStageError(f"cannot read the run configuration {config_json}: {exc}") from None
        return cls(
            read_bus_info(home),
            stage=stage,
            run_id=run_id,
            round_no=round_no,
            run_dir=run_dir,
            config=config,
            resume=env.get("AUTOTRAIN_RESUME") == "1",
            attempt=int(env.get("AUTOTRAIN_ATTEMPT", "0")),
            agent_pid=int(env["AUTOTRAIN_AGENT_PID"]) if env.get("AUTOTRAIN_AGENT_PID") else None,
        )

    # -- reporting ---------------------------------------------------------------------------------

    def emit(
        self,
        event_type: str = "progress",
        message: str = "",
        *,
        level: str = "info",
        counters: Mapping[str, int] | None = None,
        usage: Mapping[str, float | int | None] | None = None,
        artifacts: Sequence[str] = (),
        error: str | None = None,
        stage: str | None = None,
    ) -> None:
        """Send one event of this stage (validated and redacted here, and again by the supervisor)."""
        record = event_record(
            {
                "run_id": self.run_id,
                "round": self.round,
                "stage": stage or self.stage,
                "level": level,
                "event_type": event_type,
                "message": fit_raw_text(message),
                "counters_delta": dict(counters or {}),
                "usage_delta": dict(usage or {}),
                "artifact_paths": list(artifacts),
                "error": None if error is None else fit_raw_text(error),
            }
        )
        self._publisher.send_packed("event", pack_record(record))

    def progress(self, message: str, **kwargs: object) -> None:
        """A ``progress`` event (see :meth:`emit` for the keyword arguments)."""
        self.emit("progress", message, **kwargs)  # type: ignore[arg-type]

    def sample(self, sample: TrainerSample | EvalSample | TeacherSample) -> None:
        """Publish a trainer gauge sample, a round's eval outcome or teacher endpoints' usage (stamped with this run: the supervisor
        takes only its own run's)."""
        if sample.run_id != self.run_id:
            sample = sample.model_copy(update={"run_id": self.run_id})
        self._publisher.send("sample", sample)

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder, as artifact paths are written."""
        return str(path.resolve().relative_to(self.run_dir.resolve()))

    # -- control -----------------------------------------------------------------------------------

    def pause_requested(self) -> bool:
        """True while a pause is asked for and no stop is (non-blocking): the next boundary will park."""
        self._control.poll()
        return self._control.pause_requested and not self._control.stop_requested

    def stop_requested(self) -> bool:
        """True once the supervisor asked the run to stop (non-blocking)."""
        self._control.poll()
        return self._control.stop_requested

    def checkpoint(self) -> None:
        """A safe boundary: park while paused, raise :class:`StopRequested` when a stop was asked."""
        self._control.poll()
        if self._control.pause_requested and not self._control.stop_requested:
            self._park()
        if self._control.stop_requested:
            self.phase = "stopping"
            raise StopRequested()

    def wait_if_paused(self) -> None:
        """Park while paused (returns on resume or stop, without raising)."""
        self._control.poll()
        if self._control.pause_requested and not self._control.stop_requested:
            self._park()

    def _park(self) -> None:
        self.phase = "parked"
        self._send_status()
        log.info("paused at a safe boundary")
        while self._control.pause_requested and not self._control.stop_requested:
            self._control.poll(_PARK_POLL_S)
        self.phase = "running"
        self._send_status()

    def _send_status(self) -> None:
        self._publisher.send(
            "state", AgentStatus(stage=self.stage, pid=self.pid, phase=self.phase, run_id=self.run_id)
        )

    def _beat(self) -> None:
        # Its own socket: no socket is shared between threads.
        publisher = Publisher(self.info, self.sender, send_timeout_s=5.0)
        try:
            while not self._stop_heartbeat.wait(HEARTBEAT_S):
                try:
                    publisher.send(
                        "state",
                        AgentStatus(stage=self.stage, pid=self.pid, phase=self.phase, run_id=self.run_id),
                    )
                except BusError:
                    continue
        finally:
            publisher.close()

    def close(self) -> None:
        """Stop the heartbeat, report done (after every event sent), and flush what is pending."""
        self._stop_heartbeat.set()
        self._heartbeat.join(timeout=5)
        self._control.close()
        self.phase = "done"
        try:
            self._send_status()
        except BusError as exc:
            log.warning("could not send the final report: %s", exc)
        self._publisher.close()


def run_config_from_json(text: str, source: str) -> AutoTrainConfig:
    """The run's effective configuration from its JSON form (what the supervisor passes or wrote)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FatalStageError(f"cannot read the run configuration {source}: {exc}") from None
    if not isinstance(data, dict):
        raise FatalStageError(f"{source} is not a configuration object")
    # Overrides are parsed like command-line values; null is the empty value (e.g. no MAX_COST_USD).
    values = {k: "" if v is None else str(v) for k, v in data.items() if v != "[REDACTED]"}
    try:
        return load_config(None, env={}, overrides=values)
    except ConfigError as exc:
        raise FatalStageError(f"invalid run configuration {source}: {exc}") from None


def run_stage(main: Callable[[AgentRuntime], None]) -> int:
    """Run a stage's ``main`` with a runtime from the environment; returns the process exit status.

    An agent that ends on an error writes it as the last line of its log (its stderr,
    ``logs/<stage>_round_N.log``), after anything closing the runtime may log: the supervisor quotes
    that line in the run's failure, and ``--logs`` shows it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        runtime = AgentRuntime.from_env()
    except FatalStageError as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    except Exception as exc:
        log.error("cannot connect to the supervisor: %s", exc)
        return 1
    last_word: str | None = None
    try:
        main(runtime)
        return 0
    except StopRequested:
        runtime.progress(f"{runtime.stage} stopped at a safe boundary", level="warn")
        return EXIT_STOPPED
    except FatalStageError as exc:
        last_word = f"{runtime.stage} failed: {exc}"
        runtime.emit("error", last_word, level="error", error=str(exc))
        return EXIT_FATAL
    except Exception as exc:
        if is_no_space(exc):
            # Not a crash: the supervisor starts the stage again once there is room (it resumes).
            log.error("%s: no space left on device: %s", runtime.stage, exc)
            runtime.progress(f"{runtime.stage} paused: no space left on device ({exc})", level="warn")
            return EXIT_NOSPACE
        log.exception("%s crashed", runtime.stage)
        last_word = f"{runtime.stage} crashed: {type(exc).__name__}: {exc}"
        runtime.emit("error", last_word, level="error", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        try:
            runtime.close()
        finally:
            if last_word is not None:  # bare, with no logging prefix: the line the run's failure quotes
                print(last_word, file=sys.stderr, flush=True)
