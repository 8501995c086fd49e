"""``autotrain-menu --logs``: a run's agent logs and the supervisor's log, redacted, optionally followed.

The agent logs are ``<home>/runs/<run_id>/logs/<stage>_round_<n>.log`` (one per stage and round); the
supervisor's is ``<home>/supervisor.log`` (written when it runs detached), of which only the run's part is
printed: from a line naming the run to a line naming another (the log holds every run of the home). Every line is printed with
its source (``train r1 | …``), ANSI-stripped and redacted like everything else the commands print.
``--follow`` keeps printing new lines, of new files too (a stage that starts later), until Ctrl+C.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from heidi_engine.bus.event import PIPELINE_STAGES, RUN_ID_RE, is_run_id
from heidi_engine.bus.exit_status import EXIT_BAD_USAGE, EXIT_FAILURE, EXIT_OK
from heidi_engine.bus.redaction import default_redactor
from heidi_engine.ui.menu.actions import Controller

__all__ = ["LOG_STAGES", "LogTail", "latest_run", "show_logs"]

LOG_STAGES = (*PIPELINE_STAGES, "supervisor")
_AGENT_LOG = re.compile(r"^(generate|validate|train|eval)_round_(\d+)\.log$")
# A run id anywhere in a line (the event module's pattern, unanchored).
_NAMED_RUN = re.compile(r"\b" + RUN_ID_RE.pattern.strip("^$") + r"\b")
_POLL_S = 0.1
_MAX_LINE = 2000


def latest_run(home: Path) -> str | None:
    """The newest run id of the home (run ids sort by their start time), or ``None``."""
    root = home / "runs"
    if not root.is_dir():
        return None
    runs = sorted((p.name for p in root.iterdir() if p.is_dir() and is_run_id(p.name)), reverse=True)
    return runs[0] if runs else None


@dataclass
class LogTail:
    """The log files of one run (and the supervisor's), read from where the last read stopped."""

    home: Path
    run_id: str
    stage: str | None = None
    offsets: dict[Path, int] = field(default_factory=dict)
    partial: dict[Path, bytes] = field(default_factory=dict)
    in_run: bool = False  # whether the supervisor's log, as read so far, is in this run's part

    def _ours(self, label: str, text: str) -> bool:
        """Whether a line of ``label``'s log belongs to this run (an agent log's always does)."""
        if label != "supervisor":
            return True
        named = {found.group(0) for found in _NAMED_RUN.finditer(text)}
        if named:
            self.in_run = self.run_id in named
        return self.in_run

    def files(self) -> list[tuple[str, Path]]:
        """``(label, path)`` of every log that exists, by round then stage order; the supervisor's first."""
        found: list[tuple[tuple[int, int], str, Path]] = []
        if self.stage in (None, "supervisor") and (self.home / "supervisor.log").is_file():
            found.append(((-1, 0), "supervisor", self.home / "supervisor.log"))
        logs = self.home / "runs" / self.run_id / "logs"
        for path in logs.iterdir() if logs.is_dir() else ():
            match = _AGENT_LOG.match(path.name)
            if match and self.stage in (None, match.group(1)):
                round_no = int(match.group(2))
                found.append(((round_no, LOG_STAGES.index(match.group(1))), f"{match.group(1)} r{round_no}", path))
        return [(label, path) for _key, label, path in sorted(found)]

    def read(self, *, final: bool = False) -> Iterator[tuple[str, str]]:
        """New complete lines since the last read, ``(label, redacted line)``; ``final`` ends a cut line too."""
        redactor = default_redactor()
        for label, path in self.files():
            try:
                with path.open("rb") as handle:
                    size = path.stat().st_size
                    start = self.offsets.get(path, 0)
                    if size < start:  # the file was truncated or replaced: read it from the top
                        start, self.partial[path] = 0, b""
                    handle.seek(start)
                    data = self.partial.pop(path, b"") + handle.read()
                    self.offsets[path] = handle.tell()
            except OSError:
                continue
            *lines, rest = data.split(b"\n")
            if rest and final:
                lines.append(rest)
            elif rest:
                self.partial[path] = rest
            for raw in lines:
                text = raw.decode("utf-8", "replace").rstrip("\r")
                if self._ours(label, text):
                    yield label, redactor.clean(text, _MAX_LINE)

    def follow(self) -> Iterator[tuple[str, str]]:
        """:meth:`read`, then every new line as it is written; ends only when the caller stops (Ctrl+C)."""
        yield from self.read()
        while True:
            time.sleep(_POLL_S)  # polling the files: no inotify dependency, 0.1 s is well within "at once"
            yield from self.read()


def show_logs(controller: Controller, *, run_id: str | None, stage: str | None, follow: bool) -> int:
    """Print (and with ``follow``, keep printing) the logs; JSON Lines under ``--json``. The exit code."""
    if run_id is not None and not is_run_id(run_id):
        controller.complain(f"--run {run_id[:80]!r} is not a run id (run_YYYYMMDD_HHMMSS_<8 hex>)")
        return EXIT_BAD_USAGE
    chosen = run_id or latest_run(controller.home)
    if chosen is None or not (controller.home / "runs" / chosen).is_dir():
        where = controller.home / "runs"
        controller.complain(f"no run {chosen} in {where}" if chosen else f"no runs yet in {where}")
        return EXIT_FAILURE
    tail = LogTail(controller.home, chosen, stage)
    if not follow and not tail.files():
        controller.complain(f"run {chosen} has no {stage + ' ' if stage else ''}logs yet")
        return EXIT_OK
    for label, line in tail.follow() if follow else tail.read(final=True):
        if controller.json_mode:
            print(json.dumps({"run_id": chosen, "source": label, "line": line}), file=controller.out, flush=True)
        else:
            print(f"{label:<12}| {line}", file=controller.out, flush=True)
    return EXIT_OK
