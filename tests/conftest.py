"""Makes the helper packages under tests/ (e.g. ``fakes``) importable from every test."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser import Session, require_browser
from harness import HttpProc, SupervisorProc, short_home

# Fixtures that live in modules of their own (a menu on a pseudo-terminal, a detached supervisor).
pytest_plugins = ("menu_driver", "tmux_pane")

# A shell without job control starts `cmd &` with SIGINT ignored, and an ignored signal stays ignored
# through every fork and exec: the commands the tests start would then never see the Ctrl+C (SIGINT) the
# tests send them, and hang until a timeout. The suite restores it, whatever started it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One dense copy of the packaged model for the whole session, which the agents the tests start
    inherit: the GGUF file is converted once, and nothing is written to the user's ~/.cache."""
    if "AUTOTRAIN_MODEL_CACHE" in os.environ:
        yield
        return
    os.environ["AUTOTRAIN_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))
    try:
        yield
    finally:
        del os.environ["AUTOTRAIN_MODEL_CACHE"]


@pytest.fixture
def home() -> Iterator[Path]:
    """A temporary AutoTrain home with a short path."""
    with short_home() as folder:
        yield folder


@pytest.fixture
def start_supervisor(home: Path) -> Iterator[Callable[..., SupervisorProc]]:
    """Start real supervisors on ``home``; every one is stopped (and its agents gone) after the test."""
    started: list[SupervisorProc] = []

    def start(**kwargs: Any) -> SupervisorProc:
        proc = SupervisorProc(kwargs.pop("home", home), **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def http_server(home: Path) -> Iterator[Callable[[], HttpProc]]:
    """Start real status servers (``python -m heidi_engine.ui.http``) on ``home``; each is closed after the test."""
    started: list[HttpProc] = []

    def start() -> HttpProc:
        started.append(HttpProc(home))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Session]:
    """A headless Chromium (:class:`browser.Session`; skipped where none is installed, failed instead when
    ``AUTOTRAIN_REQUIRE_BROWSER=1``); quit, with every process it started, after the test. A failing test
    shows the page's banner, its console and the evidence the test attached."""
    require_browser()
    session = Session()
    request.node.browser_session = session
    try:
        yield session
    finally:
        session.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Runs while the browser is still open (before the fixture's teardown), so the page can still be read.
    outcome = yield
    report = outcome.get_result()
    session = getattr(item, "browser_session", None)
    if session is not None and report.when == "call" and report.failed:
        report.sections.append(("browser evidence", session.report()))
