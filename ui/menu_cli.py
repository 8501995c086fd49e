# PYTHON_ARGCOMPLETE_OK
"""``autotrain-menu``: the interactive menu, or one non-interactive action per flag.

Exit codes: 0 success; 1 runtime failure (a refused command, a run that did not complete, a supervisor
that cannot be started); 2 bad usage or invalid configuration (one line per problem, nothing sent);
3 no supervisor reachable (``--status``, ``--stop``, ``--pause``, ``--resume``). Every flag works
without a terminal; only the menu itself and ``--configure`` need one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from heidi_engine.bus.config import ConfigError, load_config, parse_override, start_only_problems
from heidi_engine.bus.connection import BUS_ENV, ConnectionFileError, use_bus_file
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from heidi_engine.bus.options import (
    INIT_HINT,
    HomeError,
    add_bus_option,
    add_home_option,
    command_parser,
    open_home,
    resolve_home,
    unrunnable_defaults,
)
from heidi_engine.bus.storage import FILE_MODE
from heidi_engine.ui.completion import enable as enable_completion
from heidi_engine.ui.connect import NoSupervisor, find_supervisor
from heidi_engine.ui.menu.actions import Controller
from heidi_engine.ui.menu.launch import PROG
from heidi_engine.ui.menu.logs import LOG_STAGES, show_logs
from heidi_engine.ui.pipe import quiet_on_closed_pipe

__all__ = ["main"]

_ACTIONS = (
    "start",
    "status",
    "stop",
    "pause",
    "resume",
    "shutdown",
    "resume_run",
    "configure",
    "list",
    "compare",
    "export_tensorboard",
    "config_show",
    "logs",
    "dashboard",
    "http",
    "init",
)
# The actions that start something or write into the home: a missing home is made for them (0700).
_WRITERS = frozenset({"start", "resume_run", "configure", "init"})
# The offline profile (the repository's config.yaml, shipped as package data) that --init writes.
_SHIPPED_CONFIG = Path(__file__).resolve().parent / "menu" / "offline_config.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        PROG,
        "AutoTrain control menu. Without a flag: the interactive menu (needs a terminal).",
        """examples:
  autotrain-menu --init ~/autotrain                # a new home with the offline profile (config.yaml)
  autotrain-menu --start --rounds 2 --wait        # start a run, follow it, exit 0 if it completed
  autotrain-menu --start --json | jq -r .run_id   # the new run's id, for scripts
  autotrain-menu --status --json                  # status as JSON (exit 3: no supervisor)
  autotrain-menu --logs --follow --stage train    # follow the training agent's log
  autotrain-menu --config-show --set LORA_R=32    # effective config, each value's source
  autotrain-menu --bus laptop.bus.json --pause    # a supervisor on another machine
  eval "$(register-python-argcomplete autotrain-menu)"   # shell completion (bash/zsh)

exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid configuration,
  3 no supervisor reachable""",
    )
    add_home_option(parser)
    add_bus_option(parser)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument(
        "--start", action="store_true", help="start a new run (and the supervisor if none runs)"
    )
    actions.add_argument("--status", action="store_true", help="show the supervisor's status")
    actions.add_argument("--stop", action="store_true", help="stop the run at its next stage boundary")
    actions.add_argument("--pause", action="store_true", help="pause the run at its next safe boundary")
    actions.add_argument("--resume", action="store_true", help="continue a paused run")
    actions.add_argument(
        "--shutdown", action="store_true", help="stop the supervisor daemon (a running run is stopped fast)"
    )
    actions.add_argument(
        "--resume-run",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_ID",
        help="continue the last stopped or interrupted run (or RUN_ID)",
    )
    actions.add_argument("--configure", action="store_true", help="edit config.yaml interactively")
    actions.add_argument("--list", action="store_true", help="list the runs of this home")
    actions.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="two runs side by side: config differences, per-round eval, cost and duration",
    )
    actions.add_argument(
        "--export-tensorboard",
        nargs=2,
        metavar=("RUN_ID", "DIR"),
        help="write a run's trainer samples and eval results to DIR as TensorBoard scalars",
    )
    actions.add_argument(
        "--config-show",
        action="store_true",
        help="print every effective config value and its source (default, file, env AUTOTRAIN_<NAME>, --set)",
    )
    actions.add_argument(
        "--logs",
        action="store_true",
        help="print the run's agent logs and the supervisor's log, redacted (default: the newest run)",
    )
    actions.add_argument("--dashboard", action="store_true", help="run autotrain-dash")
    actions.add_argument("--http", action="store_true", help="run the HTTP status server in the foreground")
    actions.add_argument("--init", nargs="?", const="", default=None, metavar="DIR",
                         help="write the shipped offline profile (config.yaml: no API key, no GPU, no network) "
                              "into DIR (default: the home), made if missing; never over an existing one")
    parser.add_argument("--rounds", metavar="N", help="with --start: ROUNDS for this run")
    parser.add_argument("--samples", metavar="N", help="with --start: SAMPLES_PER_ROUND for this run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --start: override a config field (repeatable)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="with --start or --resume-run, or alone for the current run: follow the run to its end; "
        "exit 0 only if it completed (Ctrl+C stops following, not the run)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable JSON on stdout (every action but the menu, --configure, --dashboard, --http, --export-tensorboard; "
        "--start prints the run id); the human lines go to stderr",
    )
    parser.add_argument("--follow", action="store_true", help="with --logs: keep printing new lines (Ctrl+C ends)")
    parser.add_argument("--stage", choices=LOG_STAGES, help="with --logs: only this stage's (or the supervisor's) log")
    parser.add_argument("--run", metavar="RUN_ID", help="with --logs: this run instead of the newest")
    parser.add_argument("--port", type=int, default=None, help="with --http: port (default HTTP_PORT, 7779)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="with --http: the browser page may pause, resume and stop the run (prints a URL with a token)",
    )
    return parser


def _action(args: argparse.Namespace) -> str | None:
    for name in _ACTIONS:
        value = getattr(args, name)
        if value is not None and value is not False:
            return name
    return None


def _usage_problems(args: argparse.Namespace, action: str | None) -> list[str]:
    allowed = {
        "rounds": {"start", "config_show"},
        "samples": {"start", "config_show"},
        "set": {"start", "config_show"},
        "wait": {"start", "resume_run", ""},
        "json": {"start", "status", "stop", "pause", "resume", "shutdown", "resume_run", "list", "config_show",
                 "logs", "compare", ""},
        "port": {"http"},
        "control": {"http"},
        "follow": {"logs"},
        "stage": {"logs"},
        "run": {"logs"},
    }
    problems = []
    for option, actions in allowed.items():
        value = getattr(args, option)
        if value not in (None, False, []) and (action or "") not in actions:
            flags = " or ".join("--" + a.replace("_", "-") for a in sorted(actions) if a)
            if "" in actions:
                flags += " (or alone)"
            problems.append(f"--{option} only goes with {flags}")
    if args.json and action is None and not args.wait:
        problems.append("--json goes with an action (e.g. --status, --start) or --wait, not the interactive menu")
    return problems


def _overrides(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    overrides: dict[str, str] = {}
    problems: list[str] = []
    for item in args.set:
        try:
            key, value = parse_override(item)
        except ConfigError as exc:
            problems += exc.problems
            continue
        overrides[key] = value
    if args.rounds is not None:
        overrides["ROUNDS"] = args.rounds
    if args.samples is not None:
        overrides["SAMPLES_PER_ROUND"] = args.samples
    return overrides, problems


def _interactive_ok(controller: Controller, what: str) -> bool:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return True
    controller.complain(
        f"{what} needs a terminal; for scripts use the flags (--status [--json], --start, "
        "--stop, --pause, --resume, --resume-run, --list; see --help)"
    )
    return False


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``autotrain-menu``."""
    parser = _parser()
    enable_completion(parser)
    args = parser.parse_args(argv)
    action = _action(args)
    home = resolve_home(args.home)
    controller = Controller(home)
    problems = _usage_problems(args, action)
    if problems:
        parser.print_usage(sys.stderr)
        for problem in problems:
            controller.complain(problem)
        return EXIT_BAD_USAGE
    if action == "init":
        return _init(controller, resolve_home(args.init) if args.init else home)
    try:
        open_home(home, create=action in _WRITERS)
    except HomeError as exc:
        controller.complain(str(exc))
        return EXIT_BAD_USAGE
    bus_file = args.bus if args.bus is not None else os.environ.get(BUS_ENV) or None
    if bus_file is not None:
        try:  # named by --bus or $AUTOTRAIN_BUS alike: an unusable file is bad usage either way
            use_bus_file(bus_file)
        except ConnectionFileError as exc:
            source = "--bus" if args.bus is not None else f"${BUS_ENV}"
            controller.complain(f"{source} {bus_file}: {exc}")
            return EXIT_BAD_USAGE
    controller.json_mode = args.json
    try:
        return _run(controller, args, action)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run(controller: Controller, args: argparse.Namespace, action: str | None) -> int:
    home = controller.home
    if action == "start":
        overrides, problems = _overrides(args)
        if problems:
            return controller.refuse_config(problems + controller.config_problems(overrides))
        unrunnable = _unrunnable_here(controller, overrides)
        if unrunnable is not None:
            controller.complain(unrunnable)
            return EXIT_BAD_USAGE
        return controller.start(overrides, wait=args.wait)
    if action == "status":
        return controller.status(as_json=args.json)
    if action == "config_show":
        overrides, problems = _overrides(args)
        if problems:
            return controller.refuse_config(problems)
        from heidi_engine.ui.menu.config_show import show_config

        return show_config(controller, overrides, as_json=args.json)
    if action in ("stop", "pause", "resume", "shutdown"):
        return controller.control(action)
    if action == "resume_run":
        return controller.resume_run(args.resume_run or None, wait=args.wait)
    if action is None and args.wait:
        return controller.follow_current()
    if action == "list":
        return controller.list_runs(as_json=args.json)
    if action == "compare":
        return controller.compare(*args.compare, as_json=args.json)
    if action == "export_tensorboard":
        return controller.export_tensorboard(args.export_tensorboard[0], Path(args.export_tensorboard[1]))
    if action == "logs":
        return show_logs(controller, run_id=args.run, stage=args.stage, follow=args.follow)
    if action == "http":
        from heidi_engine.ui.http.server import main as http_main

        return http_main(
            ["--home", str(home)]
            + ([] if args.port is None else ["--port", str(args.port)])
            + (["--control"] if args.control else [])
        )
    if action == "dashboard":
        from heidi_engine.ui.menu.options import dashboard_command

        command = dashboard_command(home)
        if command is None:
            controller.complain("autotrain-dash is not installed next to this interpreter or on PATH")
            return EXIT_FAILURE
        os.execv(command[0], command)
    from heidi_engine.ui.menu.config_edit import configure
    from heidi_engine.ui.menu.interactive import Menu

    if action == "configure":
        return configure(controller) if _interactive_ok(controller, "--configure") else EXIT_BAD_USAGE
    return Menu(controller).run() if _interactive_ok(controller, "the interactive menu") else EXIT_BAD_USAGE


def _init(controller: Controller, folder: Path) -> int:
    """``--init [DIR]``: the shipped offline profile as DIR's config.yaml, never over an existing one."""
    try:
        open_home(folder, create=True)
    except HomeError as exc:
        controller.complain(str(exc))
        return EXIT_BAD_USAGE
    target = folder / "config.yaml"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        controller.complain(f"{target} already exists: left as it is (remove or rename it to start again from "
                            "the offline profile)")
        return EXIT_FAILURE
    except OSError as exc:
        controller.complain(f"cannot write {target}: {exc.strerror or exc}")
        return EXIT_BAD_USAGE
    with os.fdopen(fd, "wb") as handle:
        handle.write(_SHIPPED_CONFIG.read_bytes())
    controller.say(f"wrote {target} (the offline profile); {PROG} --home {folder} --start starts a run")
    return EXIT_OK


def _unrunnable_here(controller: Controller, overrides: dict[str, str]) -> str | None:
    """Why a run from a home without config.yaml cannot work here, or ``None``. Judged with this
    environment only when no supervisor runs (the one this command starts inherits it); a running
    supervisor judges with its own."""
    if controller.config_path.exists() or start_only_problems(overrides):
        return None  # (a start the menu refuses anyway says why itself, first)
    try:
        find_supervisor(controller.home)
        return None
    except NoSupervisor:
        pass
    try:
        config = load_config(None, overrides=overrides)
    except ConfigError:
        return None  # the start says what is wrong with it
    missing = unrunnable_defaults(config)
    if not missing:
        return None
    home = controller.home
    return (f"start refused: no config.yaml in {home}, and this configuration cannot run here: "
            f"{'; '.join(missing)}; {INIT_HINT.format(home=home)}")


if __name__ == "__main__":
    sys.exit(main())
