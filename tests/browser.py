"""Test harness for the browser page: headless Chromium driven by Selenium, with what a failure needs to show.

Debian's ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` only: Selenium Manager is kept offline
(``SE_OFFLINE``), so nothing is ever downloaded at test time. :class:`Session` owns one browser: its
console log (kept, since the driver hands each entry out once), the evidence printed when a test fails
(the page's connection banner, the console, the HTTP server's stderr), a few reads of the page's views
and, at :meth:`Session.close`, every process it started, browser helpers included.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import wait_until

# Set before Selenium is imported anywhere: its manager must never look for a driver on the internet.
os.environ["SE_OFFLINE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_ENV = "AUTOTRAIN_REQUIRE_BROWSER"
VIEWS = ("overview", "teacher", "trainer", "events", "config", "eval", "runs")
WIDTH, HEIGHT = 1280, 720


def missing() -> str | None:
    """What is missing to drive a browser here (``None``: nothing)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return None


def require_browser() -> None:
    """Skip the test when no browser can be driven here, or fail it when ``AUTOTRAIN_REQUIRE_BROWSER=1``
    (CI installs Chromium: there a missing one is a broken set-up, not a reason to skip)."""
    why = missing()
    if why is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {why}", pytrace=False)
    pytest.skip(why)


class Session:
    """One headless Chromium (``driver``) and everything it started."""

    def __init__(self, width: int = WIDTH, height: int = HEIGHT) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="at-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
                         f"--user-data-dir={self.profile}", "--disable-crash-reporter", "--no-first-run"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(str(CHROMEDRIVER))
        self.console: list[dict[str, Any]] = []
        self.evidence: list[Callable[[], str]] = []  # more to print on a failure (an HTTP server's stderr)
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
            self.viewport(width, height)
        except BaseException:
            self._kill_leftovers(self._processes(), grace_s=0)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise

    # -- the processes -----------------------------------------------------------------------------

    def _processes(self) -> list[psutil.Process]:
        """chromedriver and every process under it (the browser, its zygotes, renderers, GPU and utility
        processes)."""
        process = getattr(self.service, "process", None)
        if process is None:
            return []
        try:
            root = psutil.Process(process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def browser_processes(self) -> list[psutil.Process]:
        """The browser's own processes (the tree under chromedriver, chromedriver left out)."""
        return self._processes()[1:]

    @staticmethod
    def _living(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
        """Those still running. A zombie is dead: the browser's own are reaped by init, on its own time."""
        living = []
        for proc in processes:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    living.append(proc)
            except psutil.NoSuchProcess:
                pass
        return living

    @classmethod
    def _kill_leftovers(cls, processes: Iterable[psutil.Process], grace_s: float = 5.0) -> None:
        """Wait up to ``grace_s`` for ``processes`` to end, then kill the rest."""
        deadline = time.monotonic() + grace_s
        while (living := cls._living(processes)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in living:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(living, timeout=5)

    def close(self) -> None:
        """Quit the browser and the driver; kill whatever of theirs outlived the quit."""
        started = self._processes()
        try:
            self.driver.quit()
        finally:
            self._kill_leftovers(started)
            shutil.rmtree(self.profile, ignore_errors=True)

    def viewport(self, width: int, height: int) -> None:
        """Make the page's viewport ``width`` x ``height`` CSS pixels (screenshots are that size): a headless
        window's own size counts its invisible browser frame too."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # -- what the page says ------------------------------------------------------------------------

    def console_log(self) -> list[dict[str, Any]]:
        """Every console entry since the session started (the driver hands each one out only once)."""
        self.console.extend(self.driver.get_log("browser"))
        return list(self.console)

    def console_errors(self, stopped: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The SEVERE console entries, but for an ``/api/stream`` network error of a server in ``stopped``
        (``http://127.0.0.1:PORT`` of a server the test itself stopped: the page's EventSource says so)."""
        ignored = tuple(f"{base}/api/stream" for base in stopped)
        return [
            entry for entry in self.console_log()
            if entry.get("level") == "SEVERE"
            and not (ignored and entry.get("source") == "network" and any(i in entry.get("message", "") for i in ignored))
        ]  # fmt: skip

    def text(self, css: str) -> str | None:
        """The text of the first element matching ``css`` (``None``: none)."""
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css
        )

    def attr(self, css: str, name: str) -> str | None:
        """An attribute of the first element matching ``css`` (``None``: no element or no attribute)."""
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            css, name,
        )

    def rows(self, css: str, *attrs: str) -> list[list[str | None]]:
        """For each element matching ``css``, its attributes ``attrs`` (``None`` where one is missing)."""
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "return [...document.querySelectorAll(arguments[0])].map((r) => arguments[1].map((a) => r.getAttribute(a)));",
            css, list(attrs),
        )

    def shown(self) -> list[str]:
        """The views not hidden (the page shows exactly one)."""
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "return arguments[0].filter((v) => !document.getElementById('view-' + v).hidden);", list(VIEWS)
        )

    def show(self, view: str) -> None:
        """Click a view's tab and wait until only that view shows."""
        self.driver.find_element("id", f"tab-{view}").click()
        wait_until(lambda: self.shown() == [view], 5, 0.02, f"view {view} shown", self.report)

    def report(self) -> str:
        """What a failure shows: the banner, the address, the console and the extra evidence."""
        parts = []
        try:
            parts.append(f"page {self.driver.current_url}: #conn [{self.attr('#conn', 'data-state')}] "
                         f"{self.text('#conn')!r}; #status {self.text('#status')!r}")  # fmt: skip
            parts.append("console:")
            parts.extend(f"  {e.get('level')} {e.get('source')}: {e.get('message')}" for e in self.console_log())
        except Exception as exc:  # evidence must not hide the failure it explains
            parts.append(f"(the browser could not be read: {exc!r})")
        for source in self.evidence:
            try:
                parts.append(source())
            except Exception as exc:  # idem
                parts.append(f"(evidence failed: {exc!r})")
        return "\n".join(parts)
