"""The runs of a home: listing them, finding the one to resume, and what a run already completed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from heidi_engine.bus.event import is_run_id, utc_now_iso
from heidi_engine.bus.journal import (
    EVENTS_FILE,
    METRICS_FILE,
    STATE_FILE,
    load_state_file,
    read_events,
    repair_torn_tail,
)
from heidi_engine.bus.state import ACTIVE_STATUSES
from heidi_engine.bus.storage import atomic_write_json
from heidi_engine.bus.summary import run_summary
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


def completed_stages(run_dir: Path) -> set[tuple[int, str]]:
    """(round, stage) pairs whose successful ``stage_end`` the supervisor recorded."""
    done: set[tuple[int, str]] = set()
    for event in read_events(run_dir):
        if event.event_type == "stage_end" and event.level == "success":
            done.add((event.round, event.stage))
    return done


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
        saved.status, saved.agents = "interrupted", {}
        saved.stop_requested = saved.pause_requested = False
        saved.updated_at = utc_now_iso()
        atomic_write_json(folder / STATE_FILE, saved.model_dump(mode="json"))
        recovered.append(folder.name)
    return recovered
