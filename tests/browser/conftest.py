"""The playground page in a real browser: Debian's headless Chromium through its own
chromedriver (one version, one source package), driven by Selenium (_browser.py).

Without a browser (`apt-get install chromium chromium-driver`) these tests are skipped,
and the end of the run says so in a banner; ACTGRAD_REQUIRE_BROWSER=1 (set by CI)
makes a missing browser an error instead. What the page weighs and how soon it first
plotted are written at the end of the run: reported, never asserted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from _browser import REQUIRE_BROWSER, SERVER_SETTINGS, SKIP_REASON, browser_paths, start_driver

from actgrad_server.app import ActgradServer

#: Measurements written at the end of the run (page weight, time to first plot).
REPORT: dict[str, str] = {}


@pytest.fixture(scope="session")
def browser_binaries() -> tuple[str, str]:
    paths = browser_paths()
    if paths is None:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1, but {SKIP_REASON}", pytrace=False)
        pytest.skip(SKIP_REASON)
    return paths


@pytest.fixture(scope="session")
def driver(browser_binaries: tuple[str, str]) -> Iterator[Any]:
    browser = start_driver(*browser_binaries)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def page_server(browser_binaries: tuple[str, str]) -> Iterator[ActgradServer]:
    server = ActgradServer(SERVER_SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.stop(0).wait(10)


@pytest.fixture(scope="session")
def report() -> dict[str, str]:
    return REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write = terminalreporter.write_line
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if SKIP_REASON in str(r.longrepr)
    ]
    if skipped:
        terminalreporter.section("Playground browser tests NOT RUN", sep="!", red=True, bold=True)
        write(f"{len(skipped)} tests were skipped: {SKIP_REASON}.", red=True)
        for report in skipped:
            write(f"    {report.nodeid}")
        write("Install Debian's pair: apt-get install -y chromium chromium-driver")
        write(f"{REQUIRE_BROWSER}=1 makes a missing browser an error (CI sets it).")
    if REPORT:
        terminalreporter.section("playground measurements (reported, not asserted)")
        for key, value in REPORT.items():
            write(f"{key}: {value}")
