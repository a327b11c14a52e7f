"""Writes the playground's screenshots (docs/images/playground-*.png): each panel of the
page at 1,440 px, and the whole page at a phone's width, from a real server in this
process and Debian's headless Chromium (as the browser tests start them).

Usage: .venv/bin/python scripts/screenshots.py   (or `make screenshots`)

The flow panel shows its second preset (the rescue); the others their defaults.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
sys.path.insert(0, str(ROOT / "tests" / "browser"))

from _browser import SERVER_SETTINGS, browser_paths, console_errors, start_driver  # noqa: E402

from actgrad_server.app import ActgradServer  # noqa: E402

_LOGGER = logging.getLogger("screenshots")
PANELS = ("functions", "softmax", "neuron", "flow")
CEILING = 120.0


def _until(driver: Any, script: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, CEILING, poll_frequency=0.05).until(lambda d: d.execute_script(script))


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    _until(driver, "return document.documentElement.dataset.ready === '1'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the PNGs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = browser_paths()
    if paths is None:
        _LOGGER.error("no chromium and chromedriver: apt-get install -y chromium chromium-driver")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    server = ActgradServer(SERVER_SETTINGS)
    server.start()
    driver = start_driver(*paths, size=(1440, 1000))
    try:
        url = f"http://127.0.0.1:{server.http_port}/"
        _open(driver, url)
        driver.find_element("css selector", "[data-preset=rescue]").click()
        _until(driver, "return document.getElementById('flow').dataset.renders === '2'")
        for panel in PANELS:
            target = args.out / f"playground-{panel}.png"
            driver.find_element("id", panel).screenshot(str(target))
            _LOGGER.info("wrote %s", target.relative_to(ROOT))
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
        )
        _open(driver, url)
        target = args.out / "playground-phone.png"
        driver.save_screenshot(str(target))
        _LOGGER.info("wrote %s", target.relative_to(ROOT))
        errors = console_errors(driver)
        if errors:
            _LOGGER.error("the page logged errors: %s", errors)
            return 1
    finally:
        driver.quit()
        server.stop(0).wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
