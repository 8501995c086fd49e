"""The browser page in headless Chromium, on a real HTTP server process following a real supervisor.

One home and one HTTP server (started with ``--control``) serve the whole module, and two runs are made on
that home, one after the other, each by a supervisor of its own (an agent's command is fixed for a
supervisor's life):

- the *live* run: the scripted agent's generate stage counts an event every 50 ms for far longer than the
  tests need; it is read while it moves, steered from the page and finally stopped from it;
- the *finished* run: two rounds with data in every view (20 trainer samples a round, an eval outcome a
  round, teacher usage, events of each level planted while paused, a fake key in an event and in the
  configuration), read once it has completed; the last test stops its supervisor under the page.

The tests run in file order (pytest's): the live run's first, then the finished run's.

Selenium drives Debian's Chromium (``tests/browser.py``); without one the tests skip, unless
``AUTOTRAIN_REQUIRE_BROWSER=1`` (CI). Screenshots of every view go to ``AUTOTRAIN_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shlex
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import VIEWS, Session, require_browser
from harness import TESTS, HttpProc, SupervisorProc, agent_env, scripted, short_home, wait_until
from prometheus_client.parser import text_string_to_metric_families

from heidi_engine.bus.connection import read_bus_info
from heidi_engine.bus.event import Event
from heidi_engine.bus.publisher import Publisher
from heidi_engine.bus.state import EndpointUsage, TeacherSample

pytestmark = pytest.mark.timeout(240)

FAKE_KEY = "sk-proj-Q3xv9LmT2aZkR8pWc1NbYh4dJf7GsE0u"
URL_SECRET = "Url.Pass-9fQ2xLr7Tz"  # a password in the teacher URL of the configuration
FORBIDDEN = (FAKE_KEY, FAKE_KEY[:14], FAKE_KEY[14:], URL_SECRET)
NEEDLE = "needle-7f3e"  # a word of one planted message only, for the text filter

LIVE_AGENTS = agent_env(scripted("--events", "2000", "--delay", "0.05"))
TRAIN_SAMPLES = 20  # a round; two rounds
FINISHED_AGENTS = agent_env(
    generate=scripted("--events", "6", "--delay", "0.05"),
    validate=scripted("--events", "4", "--counter", "validated_ok"),
    train=scripted("--events", str(TRAIN_SAMPLES), "--delay", "0.02", "--samples", "--counter", "train_step"),
    # Round 2's eval starts 2 s late: the events of every level are planted then, among the newest.
    eval=shlex.join(["sh", "-c", f'[ "$AUTOTRAIN_ROUND" = 2 ] && sleep 2; exec {sys.executable} "$0"',
                     str(TESTS / "agents" / "eval_outcome_agent.py")]),
)
FINISHED_CONFIG = f"ROUNDS: 2\nTEACHER_BASE_URL: https://bob:{URL_SECRET}@teacher.invalid/v1\n"


@dataclass
class Stack:
    """The module's home, its control-enabled HTTP server and the supervisor of the moment."""

    home: Path
    server: HttpProc
    sup: SupervisorProc | None = None
    runs: dict[str, str] = field(default_factory=dict)  # "live"/"finished" -> run id

    def supervisor(self, env: dict[str, str], config: str) -> SupervisorProc:
        """Stop the current supervisor (its run ends with it) and start one with ``env`` and ``config``."""
        if self.sup is not None:
            self.sup.stop()
        self.sup = SupervisorProc(self.home, env=env, config=config)  # kept first: stopped even if never ready
        return self.sup.wait_ready()

    def follows(self, run_id: str) -> None:
        """Wait until the HTTP server shows ``run_id`` (it takes a few seconds to find a new supervisor)."""
        wait_until(lambda: self.server.get("/api/snapshot").json()["state"]["run_id"] == run_id,  # type: ignore[index]
                   20, 0.05, f"the HTTP server following {run_id}", self.evidence)  # fmt: skip

    def evidence(self) -> str:
        return "\n".join([self.server.evidence(), *([self.sup.evidence()] if self.sup is not None else [])])

    def metric(self, name: str, server: HttpProc | None = None) -> float:
        text = (server or self.server).get("/metrics").body.decode()
        values = [s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
        assert len(values) == 1, (name, values)
        return values[0]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_browser()
    with short_home() as home:
        server = HttpProc(home, control=True, log=home / "http.stderr")
        built = Stack(home, server)
        try:
            yield built
        finally:
            try:
                if built.sup is not None:
                    built.sup.stop()
            finally:
                server.close()


@pytest.fixture(scope="module")
def live(stack: Stack) -> SupervisorProc:
    """A running run whose generate stage counts an event every 50 ms (for 100 s at most)."""
    sup = stack.supervisor(LIVE_AGENTS, "ROUNDS: 1\n")
    stack.runs["live"] = sup.call("start")["run_id"]
    sup.wait_status("running")
    stack.follows(stack.runs["live"])
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] >= 3, 20, 0.05, "events flowing", sup.evidence)
    return sup


def _plant_usage(stack: Stack, run_id: str) -> None:
    """Teacher usage in events, each seen by the server before the next (its usage series takes a point per
    change it sees), and two endpoints' usage in a teacher sample."""
    base = Event(run_id=run_id, round=1, stage="generate", event_type="progress").model_dump()

    def points() -> int:
        return len(stack.server.get("/api/snapshot").json()["series"]["usage"])  # type: ignore[index]

    with Publisher(read_bus_info(stack.home), "generate:planted") as publisher:
        for batch in range(8):
            before = points()
            usage = {"requests_sent": 4, "input_tokens": 1500 + 100 * batch, "output_tokens": 400 + 30 * batch,
                     "estimated_cost_usd": 0.0009 + 0.0001 * batch}  # fmt: skip
            publisher.send("event", Event.model_construct(**{
                **base, "message": f"teacher batch {batch}: 4 replies", "usage_delta": usage,
                "counters_delta": {"teacher_generated": 4, "rejected_dedup": batch % 2}}))  # fmt: skip
            wait_until(lambda b=before: points() > b, 10, 0.02, f"the server's usage point for batch {batch}",
                       stack.evidence)  # type: ignore[misc]  # fmt: skip
        publisher.send("sample", TeacherSample(run_id=run_id, endpoints={
            "https://teacher-a.invalid/v1": EndpointUsage(
                usage={"requests_sent": 20, "input_tokens": 7000, "output_tokens": 1900, "estimated_cost_usd": 0.004},
                errors=1, in_flight=2, latency_p50_s=0.8, latency_p95_s=2.4),
            "https://teacher-b.invalid/v1": EndpointUsage(
                usage={"requests_sent": 12, "input_tokens": 4200, "output_tokens": 1100, "estimated_cost_usd": 0.0025},
                in_flight=1, latency_p50_s=1.1, latency_p95_s=3.0),
        }))  # fmt: skip


def _plant_levels(home: Path, run_id: str) -> None:
    """Events of every level, one with a fake key (sent raw: ``model_construct`` skips the model's redaction)."""
    base = Event(run_id=run_id, round=2, stage="generate", event_type="progress").model_dump()
    with Publisher(read_bus_info(home), "generate:planted") as publisher:
        for level, stage, message, extra in (
            ("warn", "generate", f"teacher reply cut at TEACHER_MAX_TOKENS ({NEEDLE})", {}),
            ("warn", "validate", "2 samples rejected: schema", {"counters_delta": {"rejected_schema": 2}}),
            ("error", "validate", "unit test crashed in the sandbox",
             {"event_type": "error", "error": "Traceback: ZeroDivisionError in test_mean"}),
            ("success", "train", "adapter saved: out_lora_round_1", {}),
            ("info", "generate", f"retrying with key {FAKE_KEY}", {}),
        ):
            publisher.send("event", Event.model_construct(**{**base, "stage": stage, "level": level,
                                                              "message": message, **extra}))  # fmt: skip


@dataclass
class Finished:
    sup: SupervisorProc
    run_id: str
    state: dict[str, Any]
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def finished(stack: Stack) -> Finished:
    """A completed two-round run with data in every view (see :func:`_plant_usage`, :func:`_plant_levels`)."""
    sup = stack.supervisor(FINISHED_AGENTS, FINISHED_CONFIG)
    run_id = stack.runs["finished"] = sup.call("start")["run_id"]
    sup.wait_status("running")
    sup.call("pause")  # planted events are taken only while the run is active: paused, it waits for them
    sup.wait_status("paused")
    stack.follows(run_id)  # it sees the teacher usage grow, point by point, for the page's usage charts
    _plant_usage(stack, run_id)
    sup.call("resume")
    wait_until(lambda: (lambda s: (s["current_round"], s["current_stage"]))(sup.status()) == (2, "eval"), 30, 0.02,
               "round 2's eval (its agent waits 2 s)", sup.evidence)  # fmt: skip
    _plant_levels(stack.home, run_id)
    assert sup.wait_status("completed", "failed", timeout_s=90)["status"] == "completed", sup.evidence()
    snapshot = sup.call("snapshot")
    wait_until(lambda: stack.server.get("/api/snapshot").json()["state"]["status"] == "completed",  # type: ignore[index]
               20, 0.05, "the HTTP server sees the run completed", stack.evidence)  # fmt: skip
    events = stack.server.get("/api/snapshot").json()["events"]
    assert sum(NEEDLE in e["message"] for e in events) == 1, "the planted events came too late (the run had ended)"
    return Finished(sup, run_id, snapshot["state"], events)  # type: ignore[arg-type]


# -- the page -------------------------------------------------------------------------------------


def open_page(browser: Session, stack: Stack, url: str | None = None) -> None:
    """Load the page (or ``url``, which lands on it) and wait until its stream is live."""
    if stack.evidence not in browser.evidence:
        browser.evidence.append(stack.evidence)
    browser.driver.get(url or f"{stack.server.url}/ui")
    wait_until(lambda: browser.attr("#conn", "data-state") == "live", 15, 0.05, "the page's banner live",
               browser.report)  # fmt: skip


def counter(browser: Session, name: str, table: str = "counters") -> int | None:
    kind = "counter" if table == "counters" else "usage"
    value = browser.attr(f"#{table} tr[data-{kind}={name}] .value", "data-value")
    return None if value in (None, "") else int(float(value))


def filled(browser: Session, stack: Stack, finished: Finished, view: str) -> Callable[[], object]:
    """Whether ``view`` shows the finished run's data (a view is drawn a frame after it is shown)."""
    ready: dict[str, Callable[[], object]] = {
        "overview": lambda: counter(browser, "train_step") == 2 * TRAIN_SAMPLES
        and counter(browser, "input_tokens", "usage"),
        "teacher": lambda: len(browser.rows("#teacher-table tbody tr", "class")) == 2
        and int(browser.attr("#chart-tokens", "data-points") or 0) >= 2,
        "trainer": lambda: browser.attr("#chart-loss", "data-points") == str(2 * TRAIN_SAMPLES),
        "events": lambda: browser.attr("#event-list", "data-matching") == str(len(finished.events))
        and browser.rows("#event-list tr.event", "data-level"),
        "config": lambda: "TEACHER_BASE_URL" in (browser.text("#config-table") or ""),
        "eval": lambda: len(browser.rows("#eval-table tr[data-round]", "data-round")) == 2,
        "runs": lambda: len(browser.rows("#runs-table tr[data-run]", "data-run")) == len(stack.runs),
    }
    return ready[view]


# -- the live run ---------------------------------------------------------------------------------


def test_the_page_loads_without_console_errors_wide_and_narrow(stack: Stack, live: SupervisorProc,
                                                               browser: Session) -> None:
    open_page(browser, stack)
    assert browser.text("#status") == "running"
    assert browser.text("#run-id") == stack.runs["live"]
    for key, view in zip("1234567", VIEWS, strict=True):  # the keys switch views, in the tabs' order
        browser.driver.find_element("tag name", "body").send_keys(key)
        wait_until(lambda view=view: browser.shown() == [view], 5, 0.02, f"key {key} shows {view}", browser.report)
        assert browser.attr(f"#tab-{view}", "aria-selected") == "true"
    assert browser.console_errors() == []
    browser.viewport(420, 900)
    browser.driver.get(f"{stack.server.url}/ui#overview")
    wait_until(lambda: browser.attr("#conn", "data-state") == "live", 15, 0.05, "live at 420 px", browser.report)
    for view in VIEWS:
        browser.show(view)
        # Narrow, the page may scroll inside its tables, never the whole page sideways.
        wide = browser.driver.execute_script("return document.documentElement.scrollWidth")
        assert wide <= 420 + 1, f"view {view} is {wide} px wide in a 420 px window"
    assert browser.console_errors() == []


def test_overview_counters_follow_the_supervisor_within_a_second(stack: Stack, live: SupervisorProc,
                                                                 browser: Session) -> None:
    open_page(browser, stack)
    browser.driver.set_script_timeout(10)
    lags, seen = [], []
    for _ in range(10):
        t0 = time.monotonic()
        target = live.status()["counters"]["teacher_generated"]
        shown = browser.driver.execute_async_script(
            """
            const [target, done] = [arguments[0], arguments[arguments.length - 1]];
            const read = () => {
              const v = document.querySelector('#counters tr[data-counter=teacher_generated] .value');
              return v && v.dataset.value !== '' ? Number(v.dataset.value) : -1;
            };
            const start = performance.now();
            (function poll() {
              const value = read();
              if (value >= target || performance.now() - start > 8000) done(value);
              else setTimeout(poll, 5);
            })();
            """,
            target,
        )
        lags.append(time.monotonic() - t0)
        seen.append((target, shown))
        time.sleep(0.3)  # spread the samples over a few seconds of the run (a pace, not a synchronisation)
    print("counter lags (s):", ", ".join(f"{lag:.3f}" for lag in lags), "; (supervisor, page):", seen)
    assert all(shown >= target for target, shown in seen), seen
    assert seen[-1][0] > seen[0][0], f"the run did not move: {seen}"
    assert statistics.median(lags) <= 1.0, lags
    assert max(lags) <= 3.0, lags


_READ_ROW = """
    const wrap = document.getElementById('event-list').parentElement;
    const top = wrap.getBoundingClientRect().top + 40;
    const row = [...document.querySelectorAll('#event-list tr.event')].find(r => r.getBoundingClientRect().top >= top);
    return row ? [row.cells[5].textContent, Math.round(row.getBoundingClientRect().top)] : null;
"""


def test_the_event_log_draws_what_is_in_sight_and_keeps_the_row_being_read(stack: Stack, live: SupervisorProc,
                                                                          browser: Session) -> None:
    open_page(browser, stack)
    browser.show("events")
    script = browser.driver.execute_script
    wait_until(lambda: int(browser.attr("#event-list", "data-matching") or 0) >= 60, 20, 0.05, "60 events held",
               browser.report)  # fmt: skip
    drawn = len(browser.rows("#event-list tr.event", "data-level"))
    assert 0 < drawn < int(browser.attr("#event-list", "data-matching") or 0)  # not every event is in the DOM
    script("document.getElementById('event-list').parentElement.scrollTop = 27 * 30")
    reading = wait_until(lambda: script(_READ_ROW), 5, 0.05, "a row in sight after the scroll", browser.report)
    before = live.status()["counters"]["teacher_generated"]
    drawn = int(browser.attr("#event-list", "data-draws") or 0)
    wait_until(lambda: live.status()["counters"]["teacher_generated"] >= before + 10, 10, 0.05, "ten more events")
    wait_until(lambda: int(browser.attr("#event-list", "data-draws") or 0) >= drawn + 2, 10, 0.05,
               "two more draws of the log, with the new events", browser.report)  # fmt: skip
    assert script(_READ_ROW) == reading, "new events above moved the row being read"
    # The bottom of the scroll holds the oldest event the page has, drawn on demand.
    script("document.getElementById('event-list').parentElement.scrollTop = 1e9")
    oldest = wait_until(lambda: script(
        "const r = [...document.querySelectorAll('#event-list tr.event')]; return r.length ? r[r.length - 1].cells[5].textContent : null"),
        5, 0.05, "the bottom rows drawn", browser.report)  # fmt: skip
    assert oldest and oldest != reading[0]
    assert browser.console_errors() == []


class _OtherOrigin(BaseHTTPRequestHandler):
    """Another site's page (another port of 127.0.0.1): it tries to pause the run through the browser."""

    target = ""

    def do_GET(self) -> None:
        page = f"""<!doctype html><title>other</title><script>
        fetch('{self.target}/api/control/pause', {{method: 'POST', mode: 'no-cors', credentials: 'include'}})
          .then(() => {{ document.title = 'sent'; }}, (e) => {{ document.title = 'failed ' + e; }});
        </script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _post_from_page(browser: Session, path: str) -> dict[str, Any]:
    return browser.driver.execute_async_script(  # type: ignore[no-any-return]
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: 'POST'}).then(async (r) => done({status: r.status, body: await r.text()}),
                                                   (e) => done({status: -1, body: String(e)}));
        """,
        path,
    )


def _unchanged(sup: SupervisorProc, before: int) -> None:
    status = sup.status()
    assert status["status"] == "running" and not status["pause_requested"] and not status["stop_requested"], status
    wait_until(lambda: sup.status()["counters"]["teacher_generated"] > before, 10, 0.05, "the run still moves")


def test_without_the_token_the_run_cannot_be_steered(stack: Stack, live: SupervisorProc, browser: Session,
                                                     tmp_path: Path) -> None:
    refused = stack.metric("autotrain_http_refused_total")
    readonly = HttpProc(stack.home, log=tmp_path / "readonly.stderr")
    browser.evidence.append(readonly.evidence)
    try:
        # The page of a read-only server: no controls, and its own POST is refused.
        browser.driver.get(f"{readonly.url}/ui")
        wait_until(lambda: browser.attr("#conn", "data-state") == "live", 15, 0.05, "read-only page live", browser.report)
        assert browser.driver.find_element("id", "readonly").is_displayed()
        assert not browser.driver.find_element("id", "controls").is_displayed()
        before = live.status()["counters"]["teacher_generated"]
        reply = _post_from_page(browser, "/api/control/pause")
        assert reply["status"] == 403 and "read-only" in reply["body"], reply
        _unchanged(live, before)
        assert stack.metric("autotrain_http_refused_total", readonly) == 1
    finally:
        readonly.close()
    # The control server's own page, without the cookie: refused too.
    open_page(browser, stack)
    assert not browser.driver.find_element("id", "controls").is_displayed()
    reply = _post_from_page(browser, "/api/control/pause")
    assert reply["status"] == 403 and "cookie" in reply["body"], reply
    # Now this browser holds the cookie; another origin's page in it still cannot use it.
    browser.driver.get(stack.server.control_url or "")
    wait_until(lambda: browser.attr("#conn", "data-state") == "live", 15, 0.05, "control page live", browser.report)
    assert browser.driver.current_url == f"{stack.server.url}/ui", "the token must leave the address bar"
    assert [c["name"] for c in browser.driver.get_cookies()] == [f"autotrain_control_{stack.server.port}"]
    _OtherOrigin.target = stack.server.url
    other = ThreadingHTTPServer(("127.0.0.1", 0), _OtherOrigin)
    thread = threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        before = live.status()["counters"]["teacher_generated"]
        browser.driver.get(f"http://127.0.0.1:{other.server_address[1]}/")
        wait_until(lambda: browser.driver.title != "other", 10, 0.05, "the other page's POST", browser.report)
        assert browser.driver.title == "sent", browser.driver.title  # it reached the server...
        _unchanged(live, before)  # ...which refused it
    finally:
        other.shutdown()
        other.server_close()
    # And a page with no origin at all (a data: URL).
    browser.driver.get("data:text/html,<title>other</title><script>fetch('" + stack.server.url
                       + "/api/control/pause',{method:'POST',mode:'no-cors',credentials:'include'})"
                       ".then(()=>{document.title='sent'},()=>{document.title='failed'})</script>")  # fmt: skip
    wait_until(lambda: browser.driver.title != "other", 10, 0.05, "the data: page's POST", browser.report)
    # Chromium itself may block it (a page that is not a secure context reaching a loopback address): then
    # it never reached the server. Either way the run goes on.
    reached = browser.driver.title == "sent"
    _unchanged(live, before)
    # Refused and counted: the POST without the cookie, the other origin's, the data: page's if it came.
    assert stack.metric("autotrain_http_refused_total") == refused + 2 + reached


def test_with_the_token_the_page_pauses_resumes_and_stops_the_run(stack: Stack, live: SupervisorProc,
                                                                  browser: Session) -> None:
    open_page(browser, stack, stack.server.control_url)
    assert browser.driver.current_url == f"{stack.server.url}/ui"
    wait_until(lambda: browser.driver.find_element("id", "controls").is_displayed(), 10, 0.05, "controls shown",
               browser.report)  # fmt: skip
    assert not browser.driver.find_element("id", "readonly").is_displayed()

    def click_when_enabled(button: str) -> None:
        element = browser.driver.find_element("id", button)
        wait_until(element.is_enabled, 10, 0.05, f"#{button} enabled", browser.report)
        element.click()

    def page_status(expected: str) -> None:
        wait_until(lambda: browser.text("#status") == expected, 10, 0.05, f"#status {expected}", browser.report)

    click_when_enabled("btn-pause")
    assert live.wait_status("paused", timeout_s=15)["status"] == "paused"
    page_status("paused")
    click_when_enabled("btn-resume")
    assert live.wait_status("running", timeout_s=15)["status"] == "running"
    page_status("running")
    # Stop asks first: dismissed, nothing happens; accepted, the run stops.
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    click_when_enabled("btn-stop")
    WebDriverWait(browser.driver, 5).until(expected_conditions.alert_is_present()).dismiss()
    before = live.status()["counters"]["teacher_generated"]
    _unchanged(live, before)
    click_when_enabled("btn-stop")
    WebDriverWait(browser.driver, 5).until(expected_conditions.alert_is_present()).accept()
    assert live.wait_status("stopped", timeout_s=30)["status"] == "stopped"
    page_status("stopped")
    assert browser.console_errors() == []


# -- the finished run -----------------------------------------------------------------------------


def test_the_trainer_chart_has_one_point_per_trainer_sample(stack: Stack, finished: Finished,
                                                            browser: Session) -> None:
    history = finished.state["trainer"]["loss_history"]
    assert len(history) == 2 * TRAIN_SAMPLES  # the scripted agent's samples, every one kept
    open_page(browser, stack)
    browser.show("trainer")
    wait_until(lambda: browser.attr("#chart-loss", "data-points") == str(len(history)), 10, 0.05,
               f"chart-loss with {len(history)} points", browser.report)  # fmt: skip
    drawn = browser.driver.execute_script("return document.querySelectorAll('#chart-loss path, #chart-loss polyline').length")
    assert drawn >= 1, "the loss chart draws no line"


def test_the_eval_view_shows_each_round_and_the_best(stack: Stack, finished: Finished, browser: Session) -> None:
    evals, best = finished.state["evals"], finished.state["best_round"]
    assert [e["round"] for e in evals] == [1, 2] and best == 2  # what the stand-in eval agent reports
    open_page(browser, stack)
    browser.show("eval")
    rows = wait_until(lambda: browser.rows("#eval-table tr[data-round]", "data-round", "class") or None, 10, 0.05,
                      "eval rows", browser.report)  # fmt: skip
    assert [r[0] for r in rows] == ["1", "2"]
    assert [r[0] for r in rows if "best" in (r[1] or "").split()] == [str(best)]
    texts = [browser.text(f"#eval-table tr[data-round='{n}']") or "" for n in (1, 2)]
    assert "0.25" in texts[0] and "0.50" in texts[1], texts  # adapter pass@1: 1/4, then 2/4
    assert "+0 / −0, p = 1" in texts[0] and "+1 / −0, p = 1" in texts[1], texts  # tasks gained / lost, McNemar p
    assert browser.attr("#chart-pass", "data-points") == "2"
    assert browser.attr("#chart-valloss", "data-points") == "2"
    outcome = browser.text("#eval-outcome") or ""  # the Overview's compact eval line, the paired verdict first
    assert "best r2" in outcome and "1/4→2/4 too few to tell" in outcome, outcome


def test_the_events_filters_change_the_rows(stack: Stack, finished: Finished, browser: Session) -> None:
    from selenium.webdriver.support.select import Select

    open_page(browser, stack)
    browser.show("events")
    events = finished.events

    def rows() -> list[list[str | None]]:
        return browser.rows("#event-list tr.event", "data-stage", "data-level")

    def expect(stage: str = "all", level: str = "all", text: str = "") -> int:
        return sum(
            (stage == "all" or e["stage"] == stage) and (level == "all" or e["level"] == level)
            and text in f"{e['message']}\n{e['event_type']}\n{e.get('error') or ''}".lower()
            for e in events
        )  # fmt: skip

    def wait_rows(count: int, what: str) -> list[list[str | None]]:
        # The log draws only the rows in sight (a virtual list): the page counts what matches, and the
        # rows drawn are the newest of those, all of them when they fit.
        def shown() -> list[list[str | None]] | None:
            # One read of both (a redraw between two reads would pair one draw's count with another's rows).
            matching, drawn = browser.driver.execute_script(
                "const t = document.getElementById('event-list');"
                "return [t.dataset.matching, [...t.querySelectorAll('tr.event')].map("
                "r => [r.getAttribute('data-stage'), r.getAttribute('data-level')])];")  # fmt: skip
            return drawn if matching == str(count) and len(drawn) == min(count, max(len(drawn), 20)) else None

        def detail() -> str:
            drawn = rows()
            return (f"\n#event-list data-matching={browser.attr('#event-list', 'data-matching')!r}, "
                    f"{len(drawn)} rows drawn: {drawn[:5]}\n{browser.report()}")  # fmt: skip

        return wait_until(shown, 5, 0.05, what, detail)

    everything = wait_rows(len(events), f"all {len(events)} events")
    assert everything and len(everything) <= len(events)
    stage, level = Select(browser.driver.find_element("id", "event-filter-stage")), Select(
        browser.driver.find_element("id", "event-filter-level"))  # fmt: skip
    level.select_by_visible_text("warn")
    warned = wait_rows(expect(level="warn"), "warn rows only")
    assert warned and {lv for _, lv in warned} == {"warn"}
    level.select_by_visible_text("error")
    errors = wait_rows(expect(level="error"), "error rows only")
    assert {(st, lv) for st, lv in errors} == {("validate", "error")}
    level.select_by_value("all")
    stage.select_by_visible_text("train")
    trained = wait_rows(expect(stage="train"), "train rows only")
    assert trained and 0 < expect(stage="train") < len(events) and {st for st, _ in trained} == {"train"}
    stage.select_by_value("all")
    box = browser.driver.find_element("id", "event-filter-text")
    box.send_keys(NEEDLE)
    (needle,) = wait_rows(1, "the needle's row only")
    assert needle == ["generate", "warn"] and NEEDLE in (browser.text("#event-list tr.event") or "")
    box.clear()
    box.send_keys("Traceback")  # the error field is searched too
    assert wait_rows(1, "the traceback's row") == [["validate", "error"]]
    box.clear()
    box.send_keys(" ")  # clear() sends no input event: a keystroke does
    wait_rows(len(events), "every row back")


def _stream_text(port: int, seconds: float) -> str:
    """What ``/api/stream`` sends in ``seconds`` (its status line and headers included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        chunks, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
    text = b"".join(chunks).decode()
    assert text.split("\r\n", 1)[0].endswith(" 200 OK"), text[:300]
    return text


def test_no_secret_reaches_the_page_or_any_response(stack: Stack, finished: Finished, browser: Session) -> None:
    def leaks(text: str) -> list[str]:
        return [piece for piece in FORBIDDEN if piece in text]

    open_page(browser, stack)
    seen = ""
    for view in VIEWS:
        browser.show(view)
        wait_until(filled(browser, stack, finished, view), 10, 0.05, f"the {view} view filled", browser.report)
        source = browser.driver.page_source
        text = browser.driver.execute_script("return document.body.innerText")
        assert leaks(source) == [] and leaks(text) == [], (view, leaks(source), leaks(text))
        seen += text
    # The check means something: the planted event and the configured URL did reach the page, redacted.
    assert "retrying with key [REDACTED" in seen
    assert "https://[REDACTED]@teacher.invalid/v1" in seen
    newest = finished.state["event_count"] + 1
    replies = {
        path: stack.server.get(path)
        for path in ("/api/snapshot", "/api/runs", f"/api/events?before={newest}&limit=500", "/status",
                     f"/api/compare?a={stack.runs.get('live', finished.run_id)}&b={finished.run_id}", "/ui/app.js")
    }  # fmt: skip
    for path, reply in replies.items():
        assert reply.status == 200, (path, reply.status, reply.body[:300])
        assert leaks(reply.body.decode()) == [], path
    assert "retrying with key [REDACTED" in replies[f"/api/events?before={newest}&limit=500"].body.decode()
    stream = _stream_text(stack.server.port, 3.0)
    assert "event: snapshot" in stream and "retrying with key [REDACTED" in stream
    assert leaks(stream) == []


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_screenshots_of_every_view_show_the_run(stack: Stack, finished: Finished, browser: Session,
                                                tmp_path: Path) -> None:
    folder = Path(os.environ.get("AUTOTRAIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    open_page(browser, stack)
    for view in VIEWS:
        browser.show(view)
        wait_until(filled(browser, stack, finished, view), 10, 0.05, f"the {view} view filled", browser.report)
        path = folder / f"browser-{view}.png"
        assert browser.driver.save_screenshot(str(path)), path
        assert _png_size(path) == (1280, 720), (path, _png_size(path))
    assert browser.console_errors() == []


def test_the_runs_view_lists_and_compares_both_runs(stack: Stack, live: SupervisorProc, finished: Finished,
                                                    browser: Session) -> None:
    open_page(browser, stack)
    browser.show("runs")
    listed = wait_until(lambda: [r[0] for r in browser.rows("#runs-table tr[data-run]", "data-run")]
                        if len(browser.rows("#runs-table tr[data-run]", "data-run")) == 2 else None,
                        10, 0.05, "two runs listed", browser.report)  # fmt: skip
    assert listed == [stack.runs["finished"], stack.runs["live"]]  # newest first
    assert "completed" in (browser.text(f"#runs-table tr[data-run='{stack.runs['finished']}']") or "")
    assert "stopped" in (browser.text(f"#runs-table tr[data-run='{stack.runs['live']}']") or "")
    assert not browser.driver.find_element("id", "compare").is_displayed()
    for run_id in listed:
        browser.driver.find_element("css selector", f"#runs-table tr[data-run='{run_id}'] input[type=checkbox]").click()
    wait_until(lambda: browser.driver.find_element("id", "compare").is_displayed()
               and "ROUNDS" in (browser.text("#compare-config") or ""), 10, 0.05, "the comparison", browser.report)
    assert browser.console_errors() == []


def test_the_banner_says_when_the_supervisor_or_the_server_goes(stack: Stack, finished: Finished,
                                                                browser: Session, tmp_path: Path) -> None:
    # Last in the module: it stops the supervisor. A server of its own is stopped too, under the page.
    second = HttpProc(stack.home, log=tmp_path / "second.stderr")
    browser.evidence.append(second.evidence)
    try:
        browser.driver.get(f"{second.url}/ui")
        wait_until(lambda: browser.attr("#conn", "data-state") == "live", 15, 0.05, "live", browser.report)
        assert stack.sup is not None
        stack.sup.stop()
        wait_until(lambda: browser.attr("#conn", "data-state") == "down", 15, 0.05, "banner down", browser.report)
        assert "supervisor" in (browser.text("#conn") or "")
    finally:
        second.close()
    wait_until(lambda: browser.attr("#conn", "data-state") == "lost", 15, 0.05, "banner lost", browser.report)
    # The page's reconnections to the stopped server fail in the console, and nothing else does.
    wait_until(lambda: any(f"{second.url}/api/stream" in e["message"] for e in browser.console_log()), 10, 0.1,
               "a failed reconnection in the console", browser.report)  # fmt: skip
    assert browser.console_errors(stopped=[second.url]) == []
