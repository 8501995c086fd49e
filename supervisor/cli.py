# PYTHON_ARGCOMPLETE_OK
"""``autotrain-supervisor``: the daemon's command line.

Exit codes: 0 clean shutdown, 1 runtime failure (another supervisor holds this home), 2 invalid usage or
configuration (one line per problem; nothing is created). Under a ``Type=notify`` systemd unit it reports
READY, STATUS and WATCHDOG over ``NOTIFY_SOCKET`` and logs to stderr in journald's form.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from types import FrameType

import argcomplete

from heidi_engine.bus.clients import DEFAULT_ROLE, ROLE_HELP, ROLES, issue_client, list_clients, revoke_client
from heidi_engine.bus.config import ConfigError, load_config
from heidi_engine.bus.connection import BUS_ENV, new_bus_info
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_OK
from heidi_engine.bus.keys import RemoteError, last_listen, parse_listen, publish_key_hex
from heidi_engine.bus.options import (
    INIT_HINT,
    HomeError,
    add_home_option,
    command_parser,
    open_home,
    resolve_home,
)
from heidi_engine.bus.storage import ensure_private_dir, open_private_append
from heidi_engine.supervisor.broker import Supervisor
from heidi_engine.supervisor.lock import AlreadyRunning, InstanceLock
from heidi_engine.supervisor.log_output import configure_logging, rotate_now
from heidi_engine.supervisor.notifier import Notifier
from heidi_engine.supervisor.sampler import Sampler

LOG_FILE = "supervisor.log"


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "autotrain-supervisor",
        "Run the AutoTrain supervisor daemon: the bus, the persister and the pipeline driver.",
        """examples:
  autotrain-supervisor --home ~/autotrain            # in the foreground (Ctrl+C stops the run, then exits)
  autotrain-supervisor --home ~/autotrain --detach   # in the background; log: ~/autotrain/supervisor.log
  AUTOTRAIN_HTTP_ENABLED=1 autotrain-supervisor      # also serve /status and /metrics on HTTP_PORT
  autotrain-supervisor --listen 0.0.0.0:5700         # also accept remote clients (CURVE, ports 5700-5702)
  autotrain-supervisor --issue-client laptop --listen gpu1.lan:5700   # writes ./laptop.bus.json (0600)
  autotrain-supervisor --issue-client ci --role viewer                # a client that can only watch
  autotrain-supervisor --revoke-client laptop        # cuts it off, also from a running supervisor

exit codes: 0 clean shutdown, 1 runtime failure (another supervisor holds this home),
  2 invalid usage or configuration (one line per problem; nothing is created)""",
    )
    add_home_option(parser)
    parser.add_argument("--config", type=Path, default=None, help="configuration file (default: <home>/config.yaml)")
    parser.add_argument("--detach", action="store_true", help="run in the background; logs go to <home>/supervisor.log")
    parser.add_argument("--tcp-port", type=int, default=None,
                        help="use tcp://127.0.0.1:PORT..PORT+2 instead of ipc sockets")
    parser.add_argument("--listen", metavar="HOST:PORT", default=None,
                        help="also open the bus on TCP HOST:PORT..PORT+2 for remote clients, encrypted and "
                             "authenticated with CURVE (keys in <home>/keys)")
    remote = parser.add_mutually_exclusive_group()
    remote.add_argument("--issue-client", metavar="NAME", default=None,
                        help="authorize a remote client and write its connection file (see --output), then exit; "
                             "the endpoints are --listen's, else the last address a supervisor listened on")
    remote.add_argument("--revoke-client", metavar="NAME", default=None,
                        help="remove a remote client's key (a running supervisor drops it within a second), then exit")
    remote.add_argument("--list-clients", action="store_true", help="list the authorized remote clients, then exit")
    parser.add_argument("--output", type=Path, default=None,
                        help="with --issue-client: where to write the file (default: ./NAME.bus.json)")
    parser.add_argument("--role", choices=ROLES, default=None,
                        help=f"with --issue-client: what the client may do (default: {DEFAULT_ROLE}); "
                             + "; ".join(f"{role}: {text}" for role, text in ROLE_HELP.items()))
    parser.add_argument("--no-gpu", action="store_true", help="do not sample GPUs (host CPU/RAM only)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _detach(log_path: Path) -> int:
    """Double fork into the background with stdio on the log file.

    The parent stays until the daemon reports through the returned pipe (see :func:`_report`), prints
    the daemon's pid and log path, and exits 0 (1 if the daemon did not come up).
    """
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            said = pipe.read().decode("utf-8", "replace").strip()
        if said.isdigit():
            print(f"autotrain-supervisor: running in the background (pid {said}); log: {log_path}", flush=True)
            os._exit(0)
        print(f"autotrain-supervisor: {said or 'the daemon exited while starting'} (see {log_path})",
              file=sys.stderr, flush=True)
        os._exit(1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = open_private_append(log_path)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    return write_fd


def _report(fd: int | None, text: str) -> None:
    """Tell the waiting ``--detach`` parent how the start went (its pid, or why it failed)."""
    if fd is None:
        return
    try:
        os.write(fd, text.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _manage_clients(args: argparse.Namespace, home: Path) -> int:
    """``--issue-client``, ``--revoke-client`` and ``--list-clients`` (no supervisor needed)."""
    try:
        if args.list_clients:
            problems: list[str] = []
            for client in list_clients(home, problems):
                note = "  (issued before roles: signs with the shared key; issue it again)" if client.legacy else ""
                print(f"{client.name}\t{client.role}{note}")
            for problem in problems:
                print(f"autotrain-supervisor: skipped {problem}", file=sys.stderr)
            return EXIT_OK
        if args.revoke_client is not None:
            revoke_client(home, args.revoke_client)
            print(f"autotrain-supervisor: revoked {args.revoke_client}; a running supervisor drops it within a second")
            return EXIT_OK
        listen = args.listen or last_listen(home)
        if listen is None:
            raise RemoteError("no address for the client file: give --listen HOST:PORT (the address clients dial)")
        output = args.output if args.output is not None else Path(f"{args.issue_client}.bus.json")
        role = args.role or DEFAULT_ROLE
        info = issue_client(home, args.issue_client, listen, output.resolve(), role)
    except RemoteError as exc:
        print(f"autotrain-supervisor: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    except OSError as exc:
        print(f"autotrain-supervisor: {exc.filename or home}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"autotrain-supervisor: wrote {output} for client {info.client}, role {role} ({ROLE_HELP[role]}); "
          f"endpoints {info.ingress} to {info.control}; copy it to the client machine and use --bus FILE or "
          f"{BUS_ENV}=FILE")
    if role == "admin":
        print(f"autotrain-supervisor: warning: {output} is an admin's: whoever holds it can point the teacher "
              "at any server (with this daemon's API key), run generated code unconfined and shut the daemon "
              "down. Keep it as you would an ssh key, and revoke it when it is no longer needed.", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = _parser()
    argcomplete.autocomplete(parser)  # completes the flags when the shell asks (then exits)
    args = parser.parse_args(argv)
    os.umask(0o077)
    # The supervisor and its agents talk over this home's own bus, never over a client file.
    os.environ.pop(BUS_ENV, None)
    try:
        home = open_home(resolve_home(args.home), create=True)
    except HomeError as exc:
        print(f"autotrain-supervisor: {exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    for given, name in ((args.output, "--output"), (args.role, "--role")):
        if given is not None and args.issue_client is None:
            print(f"autotrain-supervisor: {name} goes with --issue-client", file=sys.stderr)
            return EXIT_BAD_USAGE
    if args.issue_client is not None or args.revoke_client is not None or args.list_clients:
        return _manage_clients(args, home)
    if args.listen is not None:
        try:
            parse_listen(args.listen)
        except RemoteError as exc:
            print(f"autotrain-supervisor: {exc}", file=sys.stderr)
            return EXIT_BAD_USAGE
    config_path = args.config if args.config is not None else home / "config.yaml"
    if args.config is not None and not config_path.exists():
        print(f"autotrain-supervisor: config file {config_path} does not exist", file=sys.stderr)
        return EXIT_BAD_USAGE
    try:
        base_config = load_config(config_path if config_path.exists() else None)
    except ConfigError as exc:
        print(f"autotrain-supervisor: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_BAD_USAGE
    no_config = None if config_path.exists() else (
        f"no config.yaml in {home}: using the built-in defaults; runs go to {home / 'runs'} (--home DIR or "
        f"$AUTOTRAIN_HOME picks another home; {INIT_HINT.format(home=home)})")
    if no_config is not None and args.detach:
        print(f"autotrain-supervisor: {no_config}", file=sys.stderr, flush=True)  # the log says it too
    lock = InstanceLock(home)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"autotrain-supervisor: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.detach:
        rotate_now(home / LOG_FILE)
    parent = _detach(home / LOG_FILE) if args.detach else None
    if parent is not None:
        lock.update_pid()
    configure_logging(args.log_level, home / LOG_FILE if args.detach else None)
    log = logging.getLogger("autotrain-supervisor")
    if no_config is not None:
        log.warning("%s", no_config)
    _raise_open_file_limit()
    try:
        ensure_private_dir(home / "runs")
        listen = args.listen or ""
        publish = publish_key_hex(home) if listen else ""  # issued client files hold it, to check egress
        info = new_bus_info(home, os.getpid(), tcp_port=args.tcp_port, listen=listen, egress_key_hex=publish)
        sampler = Sampler(try_nvml=not args.no_gpu)
        supervisor = Supervisor(home, info, config_path=config_path, sampler=sampler)
        if base_config.HTTP_ENABLED == "1":
            supervisor.start_http(base_config.HTTP_PORT, control=base_config.HTTP_CONTROL == "1")
    except Exception as exc:
        lock.release()
        print(f"autotrain-supervisor: cannot start: {exc}", file=sys.stderr)
        _report(parent, f"cannot start: {exc}")
        return EXIT_FAILURE
    _report(parent, str(os.getpid()))

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        supervisor.note_signal(signum)  # nothing else here: the loop acts on it between two steps

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # In the foreground SIGHUP is the terminal going away: a clean stop, as SIGTERM. A detached daemon has
    # no terminal to lose, and a stray SIGHUP (a closed ssh session's, a kill -HUP) must not end its run.
    signal.signal(signal.SIGHUP, _ignore if args.detach else _on_signal)
    for name in supervisor.recover_stale_runs():
        log.warning("run %s was left active by a previous supervisor: marked interrupted", name)
    log.info("serving %s (pid %d, session %s)", home, os.getpid(), info.session)
    if listen:
        clients = list_clients(home)
        log.info("remote clients (CURVE) on %s, ports +0..+2; authorized: %s", listen,
                 ", ".join(f"{c.name} ({c.role})" for c in clients) or "none yet (--issue-client NAME)")
        for client in clients:
            if client.legacy:
                log.warning("client %s was issued before roles: an operator signing with the shared publish key; "
                            "issue it again (--revoke-client %s, --issue-client %s) to give it a key of its own",
                            client.name, client.name, client.name)
    notifier = Notifier()
    supervisor.on_step = notifier.tick
    notifier.ready(supervisor.state)
    # What start-up built (modules, models, the recovered state) lives as long as the daemon: out of the
    # collector's sight, each collection costs the event path less (a batch allocates many objects).
    gc.freeze()
    try:
        supervisor.serve_forever()
    finally:
        notifier.stopping()
        lock.release()
    log.info("shut down")
    return EXIT_OK


def _raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard one: every TCP peer holds one (a common soft limit of
    1,024 let 1,100 idle connections make libzmq abort the daemon)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            logging.getLogger("autotrain-supervisor").warning("cannot raise the open-file limit from %d: %s", soft, exc)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """A handler that does nothing (SIG_IGN would be inherited by the agents through exec)."""


if __name__ == "__main__":
    sys.exit(main())
