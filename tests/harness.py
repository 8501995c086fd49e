"""Test harness: a real supervisor subprocess on a temporary home, scripted agents, condition waits, the
HTTP status server as a process."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from heidi_engine.agents.runtime import StopRequested
from heidi_engine.bus.config import AutoTrainConfig
from heidi_engine.bus.connection import BusInfo, ConnectionFileError, read_bus_info
from heidi_engine.bus.control import ControlClient
from heidi_engine.bus.errors import BusError, CommandRefused
from heidi_engine.bus.event import PIPELINE_STAGES, Event
from heidi_engine.bus.journal import read_events
from heidi_engine.bus.state import RunState, apply_event

TESTS = Path(__file__).resolve().parent
SCRIPTED = TESTS / "agents" / "scripted_agent.py"
STAGES = PIPELINE_STAGES
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "",
    evidence: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline, with
    ``evidence()`` (what the processes involved said, and how they ended) in the failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{evidence()}" if evidence is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}{detail}")
        time.sleep(interval_s)


def scripted(*args: str) -> str:
    """The command line of the scripted agent with ``args``."""
    return " ".join([sys.executable, str(SCRIPTED), *args])


def agent_env(default: str | None = None, **per_stage: str) -> dict[str, str]:
    """``AUTOTRAIN_AGENT_<STAGE>`` variables: ``default`` for every stage unless given per stage."""
    env = {}
    for stage in STAGES:
        command = per_stage.get(stage, default)
        if command is not None:
            env[f"AUTOTRAIN_AGENT_{stage.upper()}"] = command
    return env


@contextlib.contextmanager
def short_home() -> Iterator[Path]:
    """A temporary home with a short path (ipc socket paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="at-", dir="/tmp") as folder:
        yield Path(folder)


class SupervisorProc:
    """A real ``autotrain-supervisor`` process for a test."""

    def __init__(self, home: Path, *, env: Mapping[str, str] | None = None, config: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.home = home
        if config is not None:
            (home / "config.yaml").write_text(config)
        full_env = dict(os.environ)
        full_env.update({"PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self.log = open(home / "supervisor.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "heidi_engine.supervisor.cli", "--home", str(home), "--no-gpu", *args],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._clients: list[ControlClient] = []

    def info(self) -> BusInfo | None:
        try:
            info = read_bus_info(self.home)
        except ConnectionFileError:
            return None
        return info if info.pid == self.proc.pid else None

    def wait_ready(self, timeout_s: float = 15.0) -> SupervisorProc:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited {self.proc.returncode}: {self.output()}")
            info = self.info()
            if info is None:
                return False
            with ControlClient(info, timeout_s=1) as client:
                try:
                    return bool(client.call("ping"))
                except BusError:
                    return False
        wait_until(ready, timeout_s, 0.05, "supervisor ready", self.evidence)
        return self

    def evidence(self) -> str:
        """The supervisor's exit status (or that it runs), its last output and its agents' last log lines."""
        code = self.proc.poll()
        how = "still running" if code is None else f"exited with status {code}"
        parts = [f"--- supervisor pid {self.proc.pid}: {how}; its output (end):", self.output()]
        for log in sorted(self.home.glob("runs/*/logs/*.log"))[-4:]:
            text = log.read_text(errors="replace")[-1500:]
            parts.append(f"--- {log.relative_to(self.home)} (end):\n{text}")
        return "\n".join(parts)

    def client(self, timeout_s: float = 10.0) -> ControlClient:
        info = self.info()
        assert info is not None, "no connection file"
        client = ControlClient(info, timeout_s=timeout_s)
        self._clients.append(client)
        return client

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        try:
            if not self._clients or self._clients[-1].info != self.info():
                self.client()
            return self._clients[-1].call(name, args)
        except CommandRefused:
            raise
        except (AssertionError, BusError) as exc:  # no answer: say why the supervisor gave none
            raise AssertionError(f"{name}: {exc}\n{self.evidence()}") from exc

    def status(self) -> dict[str, Any]:
        return dict(self.call("status"))

    def wait_status(self, *statuses: str, timeout_s: float = 30.0) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            last.update(self.status())
            return dict(last) if last["status"] in statuses else None

        def evidence() -> str:
            return f"last status: {last}\n{self.evidence()}"

        return wait_until(reached, timeout_s, 0.05, f"status in {statuses}", evidence)

    def output(self) -> str:
        return (self.home / "supervisor.out").read_text(errors="replace")[-4000:]

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s / 2)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout_s / 2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class FileRuntime:
    """What a stage's ``main`` uses of AgentRuntime, in-process: events are appended to the run's
    events.jsonl as the persister would write them; ``stop_at_checkpoint`` raises a stop there."""

    def __init__(self, run_dir: Path, config: AutoTrainConfig, stage: str, *, stop_at_checkpoint: int | None = None) -> None:
        self.run_dir, self.config, self.round, self.stage = run_dir, config, 1, stage
        self.run_id = "run_20240101_000000_0123abcd"
        self.checkpoints = 0
        self.stop_at = stop_at_checkpoint
        self.samples: list[Any] = []  # what the stage published with ``sample()``, in order

    def emit(self, event_type: str = "progress", message: str = "", **kwargs: Any) -> None:
        event = Event(
            run_id=self.run_id,
            round=self.round,
            stage=self.stage,  # type: ignore[arg-type]
            event_type=event_type,  # type: ignore[arg-type]
            message=message,
            level=kwargs.get("level", "info"),
            counters_delta=dict(kwargs.get("counters") or {}),
            usage_delta=dict(kwargs.get("usage") or {}),
            artifact_paths=list(kwargs.get("artifacts", ())),
        )
        with open(self.run_dir / "events.jsonl", "a") as handle:
            handle.write(event.model_dump_json() + "\n")

    def progress(self, message: str, **kwargs: Any) -> None:
        self.emit("progress", message, **kwargs)

    def sample(self, sample: Any) -> None:
        self.samples.append(sample)

    def checkpoint(self) -> None:
        self.checkpoints += 1
        if self.checkpoints == self.stop_at:
            raise StopRequested()

    def wait_if_paused(self) -> None:
        pass

    def stop_requested(self) -> bool:
        return False

    def relative(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.run_dir.resolve()))


def interpreter_for(uid: int) -> str | None:
    """A Python of our minor version that ``uid`` can run (ours may live under a private /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        os.path.realpath(sys.executable),
        *(f"{d}/{version}" for d in ("/usr/local/bin", "/usr/bin")),
    ]
    for candidate in dict.fromkeys(candidates):
        if not os.path.isfile(candidate):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-I", "-c", "pass"],
                user=uid,
                group=uid,
                extra_groups=[],
                capture_output=True,
                check=False,
            )
        except OSError:
            continue  # not executable by uid
        if probe.returncode == 0:
            return candidate
    return None


def tiny_llama(folder: Path, *, max_positions: int) -> Path:
    """A tiny random Llama (2 layers, width 32) saved in ``folder`` with the real SmolLM2 tokenizer: a local
    model folder that trains in milliseconds a step. Raises ``ModelNotAvailable`` without the package."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from heidi_engine.agents.student import resolve_model

    ref = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(ref.path_or_id, gguf_file=ref.gguf_file, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# A user's own HF Trainer script with the two documented lines: argv = output folder, steps.
USER_TRAIN_SCRIPT = """
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from heidi_engine.agents.bus_control import bus_callback

torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1)
rows = [{"input_ids": ids, "attention_mask": [1] * 8, "labels": ids}
        for ids in (torch.randint(0, 64, (8,)).tolist() for _ in range(8))]
args = TrainingArguments(output_dir=sys.argv[1], max_steps=int(sys.argv[2]), per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, report_to=[], use_cpu=True,
                         dataloader_pin_memory=False, disable_tqdm=True, save_strategy="no")
trainer = Trainer(model=LlamaForCausalLM(config), args=args, train_dataset=rows)
trainer.add_callback(bus_callback())
trainer.train()
print("final loss", [e["loss"] for e in trainer.state.log_history if "loss" in e][-1])
"""


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict[str, object]:
        assert self.headers["content-type"] == "application/json"
        return dict(json.loads(self.body))


class HttpProc:
    """``python -m heidi_engine.ui.http.server --port 0``; the URL is read from its first line.

    With ``control`` the server is started with ``--control``: it prints the control URL (kept in
    :attr:`control_url`, its token in :attr:`token`) before the ``serving`` line, and both are read. With
    ``log`` its stderr goes to that file (see :meth:`evidence`) instead of a pipe."""

    def __init__(self, home: Path, *, control: bool = False, log: Path | None = None) -> None:
        self.log = log
        self.token: str | None = None
        self.control_url: str | None = None
        self._log_handle = None if log is None else open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "heidi_engine.ui.http", "--home", str(home), "--port", "0",
             *(["--control"] if control else [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self._log_handle is None else self._log_handle,
            text=True,
        )  # fmt: skip
        if control:
            first = self._line()
            assert "control at http://127.0.0.1:" in first and "?token=" in first, f"no control URL line: {first!r}"
            self.control_url = first.split("control at ", 1)[1].strip()
            self.token = self.control_url.split("?token=", 1)[1]
            # The serving line follows at once, and may already sit in the reader's buffer, where select
            # would not see it: read it without select (a server that dies instead gives EOF, not a hang).
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
        else:
            line = self._line()
        assert "http://127.0.0.1:" in line, f"no URL line: {line!r}"
        self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert self.control_url is None or self.control_url.startswith(f"{self.url}/ui?token=")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        return self.proc.stdout.readline() if ready else ""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def evidence(self) -> str:
        """How the server ends (or that it runs) and, with ``log``, the end of its stderr."""
        code = self.proc.poll()
        how = "still running" if code is None else f"exited with status {code}"
        text = self.log.read_text(errors="replace")[-3000:] if self.log is not None and self.log.exists() else ""
        return f"--- HTTP server pid {self.proc.pid} on port {self.port}: {how}; its stderr (end):\n{text}"

    def request(self, method: str, path: str, timeout_s: float = 10, headers: dict[str, str] | None = None) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request(method, path, headers=headers or {})
            reply = conn.getresponse()
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def health(self) -> str:
        return str(self.get("/health").json()["health"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.communicate()
        if self._log_handle is not None:
            self._log_handle.close()
        assert self.proc.returncode == 0


def free_port_base() -> int:
    """A port P with P, P+1 and P+2 free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65000:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for offset in (1, 2):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", base + offset))
            except OSError:
                continue
        return base
    raise AssertionError("no three consecutive free ports on 127.0.0.1")


def replayed_state(run_dir: Path) -> RunState:
    """The state the run's event log tells, folded from its first event (what a rebuilt ledger would count)."""
    state = RunState()
    for event in read_events(run_dir):
        apply_event(state, event)
    return state


class FakeClock:
    """A clock whose sleep only moves it on: pass ``time``/``sleep`` where code takes a clock, or the whole
    object where code calls ``time.monotonic()`` and ``time.sleep()`` of a module it was given."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    monotonic = time

    def sleep(self, seconds: float) -> None:
        self.now += seconds
