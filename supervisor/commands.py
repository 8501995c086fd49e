"""Control commands: one small handler each, registered in :data:`COMMANDS`.

A handler's docstring is its help text (shown by the menu and ``autotrain-menu --help``). Handlers check
the command against the current status and refuse clearly (:class:`Refused`) rather than hang; the work
itself is done by the supervisor behind the narrow :class:`SupervisorPort` interface, so handlers are
unit-tested against a fake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from heidi_engine.bus.clients import Client
from heidi_engine.bus.config import WORK_SIZE_FIELDS, ConfigError, start_only_problems
from heidi_engine.bus.event import is_run_id
from heidi_engine.bus.message import Command, Reply
from heidi_engine.bus.redaction import clean
from heidi_engine.bus.state import ACTIVE_STATUSES, RunState
from heidi_engine.supervisor.ui_feed import PAGE_MAX

log = logging.getLogger(__name__)


class Refused(Exception):
    """The command conflicts with the current status or has bad arguments; the message says why."""


class SupervisorPort(Protocol):
    """What command handlers may ask of the supervisor."""

    state: RunState
    seq: int
    session: str

    def stats(self) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...
    def start_run(self, overrides: Mapping[str, object]) -> str: ...
    def request_stop(self) -> None: ...
    def request_pause(self) -> None: ...
    def request_resume(self) -> None: ...
    def resume_run(self, run_id: str | None) -> str: ...
    def list_runs(self) -> list[dict[str, Any]]: ...
    def request_shutdown(self) -> None: ...
    def events_page(self, run_id: str | None, before: int, limit: int) -> dict[str, Any]: ...


Handler = Callable[[SupervisorPort, Mapping[str, Any]], Any]


def _no_args(args: Mapping[str, Any], name: str) -> None:
    if args:
        raise Refused(f"{name} takes no arguments, got: {', '.join(sorted(args))}")


def _active(state: RunState) -> bool:
    return state.status in ACTIVE_STATUSES


def cmd_ping(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Check that the supervisor answers; returns its session id and pid."""
    _no_args(args, "ping")
    return {"pong": True, "session": sup.session}


def cmd_status(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Current run status, counters, usage and supervisor statistics (refused messages, uptime)."""
    _no_args(args, "status")
    return sup.stats()


def cmd_snapshot(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """The full run state with the ``seq`` it reflects (viewers apply only later updates)."""
    _no_args(args, "snapshot")
    return sup.snapshot()


def _count_arg(args: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = args.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Refused(f"events: {name} must be a whole number of at least 1, got {str(value)[:40]!r}")
    return value


def cmd_events(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Older events of the run shown now, a page at a time (what a viewer's live feed did not carry).
    Args: ``before`` (the page ends just before this event; events are numbered from 1 as the state's
    ``event_count`` counts them, so the newest is ``event_count``), ``limit`` (1 to 500, default 200),
    ``run_id`` (refused unless it is the run shown now). Returns ``events`` (oldest first), ``first`` (the
    number of the first) and ``more`` (whether older ones remain in the files)."""
    unknown = set(args) - {"before", "limit", "run_id"}
    if unknown:
        raise Refused(f"events: unknown argument(s): {', '.join(sorted(unknown))}")
    before, limit = _count_arg(args, "before"), _count_arg(args, "limit", 200)
    if limit > PAGE_MAX:
        raise Refused(f"events: limit {limit} is over the cap of {PAGE_MAX} events a page; "
                      f"ask for the next page with before set to the first number of the last one")
    run_id = args.get("run_id")
    if run_id is not None and not is_run_id(run_id):
        raise Refused(f"events: {str(run_id)[:80]!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)")
    return sup.events_page(run_id, before, limit)


def cmd_start(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Start a new run. Args: ``overrides`` {FIELD: value} over config.yaml; validated before anything starts
    (a field that only the supervisor's own start reads, such as HTTP_PORT, is refused)."""
    unknown = set(args) - {"overrides"}
    if unknown:
        raise Refused(f"start: unknown argument(s): {', '.join(sorted(unknown))}")
    overrides = args.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise Refused("start: overrides must be a mapping of config field to value")
    start_only = start_only_problems(overrides)
    if start_only:
        raise Refused("\n".join(start_only))
    if _active(sup.state):
        raise Refused(f"a run is already {sup.state.status} ({sup.state.run_id}); stop it first")
    return {"run_id": sup.start_run(overrides)}


def cmd_stop(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Stop the run gracefully: no new stage starts; the running agent finishes at its next boundary."""
    _no_args(args, "stop")
    if not _active(sup.state):
        raise Refused(f"no active run to stop (status: {sup.state.status})")
    sup.request_stop()
    return {"run_id": sup.state.run_id, "status": sup.state.status}


def cmd_pause(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Pause the run: the agent parks at its next safe boundary; status shows paused once it has."""
    _no_args(args, "pause")
    status = sup.state.status
    if status not in ("running", "starting"):
        raise Refused(f"cannot pause a run that is {status}")
    if sup.state.pause_requested:
        raise Refused("pause already requested")
    sup.request_pause()
    return {"run_id": sup.state.run_id, "status": sup.state.status}


def cmd_resume(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Continue a paused run in the same process and run id."""
    _no_args(args, "resume")
    if not sup.state.pause_requested or not _active(sup.state):
        raise Refused(f"the run is not paused (status: {sup.state.status})")
    sup.request_resume()
    return {"run_id": sup.state.run_id, "status": sup.state.status}


def cmd_resume_run(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Continue a stopped, interrupted or failed run from its last completed stage. Args: ``run_id`` (default: the last one)."""
    unknown = set(args) - {"run_id"}
    if unknown:
        raise Refused(f"resume_run: unknown argument(s): {', '.join(sorted(unknown))}")
    run_id = args.get("run_id")
    if run_id is not None and not is_run_id(run_id):
        raise Refused(f"resume_run: {str(run_id)[:80]!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)")
    if _active(sup.state):
        raise Refused(f"a run is already {sup.state.status} ({sup.state.run_id}); stop it first")
    return {"run_id": sup.resume_run(run_id)}


def cmd_list_runs(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Every run in this home, newest first, with its status and counters."""
    _no_args(args, "list_runs")
    return sup.list_runs()


def cmd_shutdown(sup: SupervisorPort, args: Mapping[str, Any]) -> Any:
    """Stop the daemon: agents get SIGTERM then SIGKILL after the grace period; the run is marked stopped.
    Args: ``if_idle`` (true: refused while a run is active; what a command that started the daemon for
    nothing uses to undo that, without ever stopping a run someone else started meanwhile)."""
    unknown = set(args) - {"if_idle"}
    if unknown or not isinstance(args.get("if_idle", False), bool):
        raise Refused("shutdown takes only if_idle (true or false)")
    if args.get("if_idle") and _active(sup.state):
        raise Refused(f"a run is {sup.state.status} ({sup.state.run_id}): not shutting down")
    sup.request_shutdown()
    return {"shutting_down": True}


COMMANDS: dict[str, Handler] = {
    "ping": cmd_ping,
    "status": cmd_status,
    "snapshot": cmd_snapshot,
    "start": cmd_start,
    "stop": cmd_stop,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "resume_run": cmd_resume_run,
    "list_runs": cmd_list_runs,
    "shutdown": cmd_shutdown,
    "events": cmd_events,
}


# The least role that may send each command (a remote client's; local clients may send every one).
# ``start`` by an operator is further limited to the fields that size the work (see :func:`refusal`).
LEAST_ROLE: dict[str, str] = {
    "ping": "viewer", "status": "viewer", "snapshot": "viewer", "list_runs": "viewer", "events": "viewer",
    "start": "operator", "stop": "operator", "pause": "operator", "resume": "operator", "resume_run": "operator",
    "shutdown": "admin",
}  # fmt: skip


def refusal(client: Client | None, command: Command) -> str | None:
    """Why ``client`` may not send ``command`` (``None``: it may). A local client (``None``) may send every
    command; a remote one what its role allows, which the server records and the handshake proves."""
    if client is None:
        return None
    who = f"client {client.name} (role {client.role})"
    least = LEAST_ROLE.get(command.name, "admin")  # a command added without a role here is an admin's
    if not client.at_least(least):
        return f"{command.name} is not allowed for {who}: it needs the {least} role"
    if command.name == "start" and not client.at_least("admin"):
        overrides = command.args.get("overrides", {})
        if isinstance(overrides, Mapping):
            fields = sorted(str(key)[:64] for key in overrides if key not in WORK_SIZE_FIELDS)
            if fields:
                named = ", ".join(fields[:8]) + (f" and {len(fields) - 8} more" if len(fields) > 8 else "")
                return (f"overriding {named} is not allowed for {who}: an operator starts runs with the "
                        f"server's configuration, sizing only the work ({', '.join(sorted(WORK_SIZE_FIELDS))})")
    return None


def help_text(name: str) -> str:
    """The first paragraph of a command's docstring."""
    doc = COMMANDS[name].__doc__ or ""
    return doc.strip().split("\n\n")[0]


def execute(sup: SupervisorPort, command: Command) -> Reply:
    """The one reply to ``command``: its handler's result, or why it was refused. A handler's bug is
    logged and answered as a failure; it never takes the daemon down."""
    try:
        result = dispatch(sup, command.name, command.args)
    except Refused as exc:
        return Reply(id=command.id, ok=False, error=clean(str(exc), 2000))
    except ConfigError as exc:
        return Reply(id=command.id, ok=False, error=clean(str(exc), 4000))
    except Exception as exc:
        log.exception("command %s failed", command.name)
        return Reply(id=command.id, ok=False, error=clean(f"{command.name} failed: {exc}", 2000))
    return Reply(id=command.id, ok=True, result=result)


def dispatch(sup: SupervisorPort, name: str, args: Mapping[str, Any]) -> Any:
    """Run the handler for ``name``; :class:`Refused` for an unknown command."""
    handler = COMMANDS.get(name)
    if handler is None:
        raise Refused(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    return handler(sup, args)
