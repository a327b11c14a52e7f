"""What the playground's browser tests and scripts/screenshots.py share: Debian's
Chromium and chromedriver found and started headless, and what the page requested
and logged, read back from Chromium's own logs.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any
from urllib.parse import urlsplit

from actgrad_server.config import Settings

__all__ = [
    "REQUIRE_BROWSER",
    "SERVER_SETTINGS",
    "SKIP_REASON",
    "browser_paths",
    "console_errors",
    "foreign",
    "requested_urls",
    "start_driver",
]

#: Set to 1 where the browser tests must run (CI): a missing browser is an error.
REQUIRE_BROWSER = "ACTGRAD_REQUIRE_BROWSER"
SKIP_REASON = "no browser: the playground's browser tests need chromium and chromedriver"
#: A server on port 0 with the default element limit: the flow presets' 30 x 256 x 256
#: weights are over the integration tests' small one.
SERVER_SETTINGS = Settings(host="127.0.0.1", port=0, http_port=0, device="cpu", grace=2.0)


def browser_paths() -> tuple[str, str] | None:
    """Chromium and its chromedriver (Debian's names), or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def start_driver(chromium: str, chromedriver: str, size: tuple[int, int] = (1440, 1000)) -> Any:
    """A headless Chromium through its own chromedriver (no Selenium Manager download),
    with its console and network logged."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.add_argument("--headless=new")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    if os.geteuid() == 0:  # Chromium's sandbox refuses to start as root
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page requested since the last call (Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs not served by `origin` (a data: URL is no request)."""
    host = urlsplit(origin).netloc
    return [u for u in urls if not u.startswith("data:") and urlsplit(u).netloc != host]


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The console's errors since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
