"""The runs of a home: listing them, finding the one to resume, and recovering those a crash left active."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.event import Event, is_run_id, utc_now_iso
from heidi_engine.bus.journal import (
    EVENTS_FILE,
    METRICS_FILE,
    STATE_FILE,
    load_state_file,
    repair_torn_tail,
)
from heidi_engine.bus.ledger import load_ledger
from heidi_engine.bus.state import ACTIVE_STATUSES, RunState, apply_event
from heidi_engine.bus.storage import atomic_write_json
from heidi_engine.bus.summary import run_summary
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.process import kill_stale_group

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
RESUMABLE = frozenset({"stopped", "interrupted", "failed"})


def runs_root(home: Path) -> Path:
    """``<home>/runs``."""
    return home / RUNS_DIR


def run_dirs(home: Path) -> list[Path]:
    """Every run folder, newest first (run ids sort by their start time)."""
    root = runs_root(home)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_run_id(p.name)), key=lambda p: p.name, reverse=True)


def summarize(run_dir: Path) -> dict[str, Any]:
    """What ``list_runs`` shows of one run."""
    return run_summary(run_dir.name, load_state_file(run_dir))


def find_resumable(home: Path, run_id: str | None) -> Path:
    """The run to resume: ``run_id`` if given (it must exist and be resumable), else the newest resumable."""
    if run_id is not None:
        folder = runs_root(home) / run_id
        state = load_state_file(folder) if folder.is_dir() else None
        if state is None:
            raise LookupError(f"no run {run_id} in {runs_root(home)}")
        if state.status not in RESUMABLE:
            raise LookupError(f"run {run_id} is {state.status}; only stopped, interrupted or failed runs resume")
        return folder
    for folder in run_dirs(home):
        state = load_state_file(folder)
        if state is not None and state.status in RESUMABLE:
            return folder
    raise LookupError("no stopped, interrupted or failed run to resume")


def mark_failed(run_dir: Path, state: RunState, reason: str) -> None:
    """Record in its own folder that a run could not start, and why (best effort: the disk may be full)."""
    state = state.model_copy(update={"status": "failed", "error": reason, "updated_at": utc_now_iso()})
    try:
        if run_dir.is_dir():
            atomic_write_json(run_dir / STATE_FILE, state.model_dump(mode="json"))
    except OSError as exc:
        log.error("cannot record the failed start in %s: %s", run_dir, exc.strerror or exc)


def recover_stale_runs(home: Path) -> list[str]:
    """Runs that a dead supervisor left active: kill their recorded agent groups (only those still
    carrying the run id), cut torn last lines, and mark them ``interrupted``. Returns their ids."""
    recovered = []
    for folder in run_dirs(home):
        saved = load_state_file(folder)
        if saved is None or saved.status not in ACTIVE_STATUSES:
            continue
        for agent in saved.agents.values():
            if kill_stale_group(agent.pgid, folder.name):
                log.warning("killed stale agent group %d of %s", agent.pgid, folder.name)
        for name in (EVENTS_FILE, METRICS_FILE):
            if repair_torn_tail(folder / name):
                log.warning("%s/%s: cut a torn last line", folder.name, name)
        # The events written after the dead supervisor's last save count too.
        load_ledger(folder).fill(saved)
        saved.status, saved.agents = "interrupted", {}
        saved.stop_requested = saved.pause_requested = False
        saved.updated_at = utc_now_iso()
        atomic_write_json(folder / STATE_FILE, saved.model_dump(mode="json"))
        recovered.append(folder.name)
    return recovered


def record_interruption(run_dir: Path, pid: int) -> None:
    """Append to a recovered run's log that it was interrupted (a warn ``progress`` event: a
    ``pipeline_stop`` would turn its replayed status into "stopped"), before any client can see it."""
    saved = load_state_file(run_dir)
    if saved is None or saved.status != "interrupted" or saved.run_id is None:
        return
    config = saved.config
    size_mb = config.get("EVENT_LOG_MAX_SIZE_MB") or AutoTrainConfig.model_fields["EVENT_LOG_MAX_SIZE_MB"].default
    retention = config.get("EVENT_LOG_RETENTION") or AutoTrainConfig.model_fields["EVENT_LOG_RETENTION"].default
    event = Event.model_validate({
        "run_id": saved.run_id, "round": saved.current_round, "stage": saved.current_stage or "round_end",
        "level": "warn", "event_type": "progress",
        "message": f"run interrupted: its supervisor went away; a new supervisor (pid {pid}) found it at start "
                   f"(autotrain-menu --resume-run {run_dir.name} continues it)",
    })
    try:
        persister = Persister.sized(run_dir, float(size_mb), int(retention))
        persister.append_events([event.to_record()])
        persister.close(apply_event(saved, event))
    except OSError as exc:
        log.error("cannot record the interruption of %s: %s", run_dir.name, exc.strerror or exc)


def last_resumable(home: Path) -> RunState | None:
    """The newest run's state when it can be resumed (interrupted, stopped or failed), else ``None``."""
    for folder in run_dirs(home)[:1]:
        saved = load_state_file(folder)
        if saved is not None and saved.status in RESUMABLE:
            return saved
    return None
