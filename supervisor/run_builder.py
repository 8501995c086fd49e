"""Building a new or resumed run without touching the current one.

The builder validates the configuration and makes the run's folder, files and driver, and hands them back
as a :class:`BuiltRun`; only then does the supervisor make the run current (nothing there can fail
half-way). A run that cannot be built is refused (:class:`~heidi_engine.supervisor.commands.Refused`); a
new one is also marked failed in its own folder, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from heidi_engine.bus.config import WORK_SIZE_FIELDS, AutoTrainConfig, ConfigError, load_config
from heidi_engine.bus.event import is_run_id, new_run_id, utc_now_iso
from heidi_engine.bus.isolation import SandboxUnavailable, choose_sandbox
from heidi_engine.bus.ledger import LedgerLost, replay, stored_state
from heidi_engine.bus.options import INIT_HINT, unrunnable_defaults
from heidi_engine.bus.state import RunState
from heidi_engine.supervisor.commands import Refused
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.pipeline import DriverSettings, Pipeline, RunHost
from heidi_engine.supervisor.process import agent_argv, agent_env
from heidi_engine.supervisor.runs import clear_orphan_temps, find_resumable, mark_failed, runs_root
from heidi_engine.supervisor.spool import why

__all__ = ["BuiltRun", "RunBuilder"]


@dataclass(frozen=True)
class BuiltRun:
    """A run ready to become the current one: its folder, state, configuration, files and driver."""

    run_dir: Path
    state: RunState
    config: AutoTrainConfig
    persister: Persister
    pipeline: Pipeline
    done: set[tuple[int, str]]  # the (round, stage) pairs already complete (a resumed run's)


class RunBuilder:
    """Builds the runs of ``home``; their drivers report to ``host`` once the run is current."""

    def __init__(self, home: Path, *, config_path: Path | None, env: Mapping[str, str], host: RunHost) -> None:
        self.home = home
        self.config_path = config_path
        self.env = env
        self.host = host

    def load_config(self, overrides: Mapping[str, object]) -> AutoTrainConfig:
        """config.yaml, the environment and ``overrides``; refused when generated code would run unconfined."""
        path = self.config_path if self.config_path is not None and self.config_path.exists() else None
        config = load_config(path, env=self.env, overrides=overrides)
        if config.RUN_UNIT_TESTS == "1":
            try:  # never run generated code unconfined in silence: refuse the run before it starts
                choose_sandbox(config.SANDBOX)
            except SandboxUnavailable as exc:
                raise Refused(str(exc)) from None
        return config

    def _refuse_unrunnable_defaults(self, config: AutoTrainConfig) -> None:
        """A home without config.yaml runs the built-in defaults (a hub model, a paid teacher): refused
        here, saying what is missing, when they cannot run, instead of a run that fails in its first stage."""
        if self.config_path is not None and self.config_path.exists():
            return
        missing = unrunnable_defaults(config, self.env)
        if missing:
            raise Refused(f"no config.yaml in {self.home}, and this configuration cannot run here: "
                          f"{'; '.join(missing)}; {INIT_HINT.format(home=self.home)}")

    def new_pipeline(self, run_dir: Path, config: AutoTrainConfig, done: set[tuple[int, str]], *, resume: bool) -> Pipeline:
        """The run's driver, its agents started with the run's configuration."""
        settings = DriverSettings(
            rounds=config.ROUNDS, max_restarts=config.AGENT_MAX_RESTARTS,
            heartbeat_timeout_s=config.AGENT_HEARTBEAT_TIMEOUT_S, stop_grace_s=config.STOP_GRACE_S,
        )
        def env_for(stage: str, round_no: int, attempt: int) -> dict[str, str]:
            return agent_env(self.env, home=self.home, run_dir=run_dir, stage=stage, round_no=round_no,
                             attempt=attempt, resume=resume, config=config.model_dump(mode="json"))
        return Pipeline(self.host, settings, run_dir=run_dir, argv_for=lambda stage: agent_argv(self.env, stage),
                        env_for=env_for, completed=done)

    def new_run(self, overrides: Mapping[str, object]) -> BuiltRun:
        """A new run: its configuration validated, its folder and files made, its driver ready.

        A run whose files cannot be made is marked failed in its own folder and the start is refused; the
        reason is also the health's (``start``) until a start succeeds.
        """
        config = self.load_config(overrides)
        self._refuse_unrunnable_defaults(config)
        run_id = new_run_id()
        run_dir = runs_root(self.home) / run_id
        state = RunState(run_id=run_id, status="starting", total_rounds=config.ROUNDS,
                         config=config.redacted_dict(), started_at=utc_now_iso())
        try:
            persister = Persister.sized(run_dir, config.EVENT_LOG_MAX_SIZE_MB, config.EVENT_LOG_RETENTION)
            try:
                persister.write_config(config.redacted_dict())
            except OSError:
                persister.close()
                raise
        except OSError as exc:
            reason = f"cannot start run {run_id}: {why(exc)} ({getattr(exc, 'filename', None) or run_dir})"
            mark_failed(run_dir, state, reason)
            self.host.report_problem("start", reason)
            raise Refused(reason) from None
        self.host.report_problem("start", None)
        pipeline = self.new_pipeline(run_dir, config, set(), resume=False)
        return BuiltRun(run_dir, state, config, persister, pipeline, set())

    def resumed_run(self, run_id: str | None) -> BuiltRun:
        """A stopped, interrupted or failed run (the last one when ``run_id`` is None), ready to continue
        from its last completed stage.

        Its totals come from the run's ledger plus the events written after it, never from the whole log:
        the answer comes at once whatever the run's length. A lost ledger is rebuilt from ``state.json``
        where it can be, or the resume is refused saying why and how to count again; a lost
        ``state.json`` is told by the ledger.
        """
        try:
            run_dir = find_resumable(self.home, run_id)
        except LookupError as exc:
            raise Refused(str(exc)) from None
        clear_orphan_temps(self.home, run_dir)
        try:
            saved = stored_state(run_dir) or RunState()
        except LedgerLost as exc:
            raise Refused(f"cannot resume {exc}") from None
        # The run keeps its own settings; redacted values (credentials) come again from config.yaml/env.
        overrides = {k: "" if v is None else str(v) for k, v in saved.config.items()
                     if not (isinstance(v, str) and "[REDACTED" in v)}
        config = self.load_config(overrides)
        try:
            persister = Persister.sized(run_dir, config.EVENT_LOG_MAX_SIZE_MB, config.EVENT_LOG_RETENTION)
        except OSError as exc:
            raise Refused(f"cannot resume {run_dir.name}: {why(exc)}") from None
        except LedgerLost as exc:
            raise Refused(f"cannot resume {exc}") from None
        state = replay(run_dir, persister.ledger)
        done = persister.ledger.done()
        pipeline = self.new_pipeline(run_dir, config, done, resume=True)
        return BuiltRun(run_dir, state, config, persister, pipeline, done)

    def settings_unlike_the_servers(self, run_id: object) -> list[str]:
        """The fields beyond the work's size in which the run that ``resume_run`` would continue differs
        from what a new run gets now (config.yaml and the environment): what an operator may not resume."""
        if run_id is not None and not is_run_id(run_id):
            return []  # the command refuses it, saying why
        try:
            saved = stored_state(find_resumable(self.home, run_id if isinstance(run_id, str) else None)) or RunState()
            current = self.load_config({}).redacted_dict()
        except (LookupError, LedgerLost, ConfigError):
            return []  # the resume itself says why it cannot be
        return sorted(k for k, v in saved.config.items() if k not in WORK_SIZE_FIELDS and current.get(k) != v)
