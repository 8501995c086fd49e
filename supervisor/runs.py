"""The runs of a home: listing them, finding the one to resume, recovering those a crash left active, and
clearing the temp files a kill left.

A run whose ``state.json`` cannot be read is told by its ledger (:func:`~heidi_engine.bus.ledger.stored_state`):
it is listed, recovered and resumed like any other. One whose ledger is lost as well, with its event log
rotated, is listed ``unknown`` with the reason, and a resume is refused with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.event import Event, is_run_id, utc_now_iso
from heidi_engine.bus.journal import (
    EVENTS_FILE,
    METRICS_FILE,
    STATE_FILE,
    load_state_file,
    repair_torn_tail,
    tail_records,
)
from heidi_engine.bus.ledger import LEDGER_FILE, LedgerLost, load_ledger, stored_state
from heidi_engine.bus.state import ACTIVE_STATUSES, RECENT_EVENTS, RunState, apply_event
from heidi_engine.bus.storage import atomic_write_json, remove_orphan_temps
from heidi_engine.supervisor.persister import Persister
from heidi_engine.supervisor.process import kill_stale_group

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
RESUMABLE = frozenset({"stopped", "interrupted", "failed"})
HOME_TEMP_AGE_S = 60.0  # a younger temp file in the home or keys/ may be another command's (config.yaml)


def runs_root(home: Path) -> Path:
    """``<home>/runs``."""
    return home / RUNS_DIR


def run_dirs(home: Path) -> list[Path]:
    """Every run folder, newest first (run ids sort by their start time)."""
    root = runs_root(home)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and is_run_id(p.name)), key=lambda p: p.name, reverse=True)


def _readable(folder: Path) -> RunState | None:
    try:
        return stored_state(folder)
    except LedgerLost:
        return None


def find_resumable(home: Path, run_id: str | None) -> Path:
    """The run to resume: ``run_id`` if given (it must exist and be resumable), else the newest resumable."""
    if run_id is not None:
        folder = runs_root(home) / run_id
        if not folder.is_dir():
            raise LookupError(f"no run {run_id} in {runs_root(home)}")
        try:
            state = stored_state(folder)
        except LedgerLost as exc:
            raise LookupError(f"cannot resume {exc}") from None
        if state is None:
            raise LookupError(f"no run {run_id} in {runs_root(home)}: neither {STATE_FILE} nor {LEDGER_FILE} "
                              "tells of one")
        if state.status not in RESUMABLE:
            raise LookupError(f"run {run_id} is {state.status}; only stopped, interrupted or failed runs resume")
        return folder
    for folder in run_dirs(home):
        state = _readable(folder)
        if state is not None and state.status in RESUMABLE:
            return folder
    raise LookupError("no stopped, interrupted or failed run to resume")


def clear_orphan_temps(home: Path, run_dir: Path | None = None) -> list[Path]:
    """Remove what atomic writes killed before their rename left: in ``run_dir`` (a run about to be
    resumed), or (``None``, at the supervisor's start) in every run folder and the home's own folders."""
    if run_dir is not None:
        removed = remove_orphan_temps(run_dir, recursive=True)
    else:
        removed = remove_orphan_temps(home, min_age_s=HOME_TEMP_AGE_S)
        removed += remove_orphan_temps(home / "keys", min_age_s=HOME_TEMP_AGE_S)  # issuing a client writes there
        removed += remove_orphan_temps(home / "run")  # bus.json: only the lock's holder writes it
        for folder in run_dirs(home):
            removed += remove_orphan_temps(folder, recursive=True)
    for path in removed:
        log.warning("removed %s, left by a write that was killed", path)
    return removed


def ledger_bytes(home: Path, run_id: str | None) -> int | None:
    """The size of a run's ``ledger.json`` in bytes (``None`` without a run or a ledger)."""
    if run_id is None:
        return None
    try:
        return (runs_root(home) / run_id / LEDGER_FILE).stat().st_size
    except OSError:
        return None


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
        saved = _readable(folder)  # an unreadable state.json is rebuilt from the ledger, and written again
        if saved is None or saved.status not in ACTIVE_STATUSES:
            continue
        for agent in saved.agents.values():
            if kill_stale_group(agent.pgid, folder.name):
                log.warning("killed stale agent group %d of %s", agent.pgid, folder.name)
        for name in (EVENTS_FILE, METRICS_FILE):
            if repair_torn_tail(folder / name):
                log.warning("%s/%s: cut a torn last line", folder.name, name)
        # The events written after the dead supervisor's last save count too; the latest events go with
        # them, so that state.json's last event is where its totals stand (what stands in for a lost ledger).
        try:
            load_ledger(folder).fill(saved)
            saved.recent_events = tail_records(folder, RECENT_EVENTS)
        except LedgerLost as exc:
            log.error("%s", exc)
        saved.status, saved.agents, saved.teacher_outage = "interrupted", {}, None
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
    except LedgerLost as exc:
        log.error("cannot record the interruption of %s", exc)


def last_resumable(home: Path) -> RunState | None:
    """The newest run's state when it can be resumed (interrupted, stopped or failed), else ``None``."""
    for folder in run_dirs(home)[:1]:
        saved = _readable(folder)
        if saved is not None and saved.status in RESUMABLE:
            return saved
    return None
