"""Helpers of the operations tests: servers with their own settings, a slow engine,
clients of either kind, and reading /metrics.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _common import TEST_SETTINGS, AsyncAdapter
from prometheus_client.parser import text_string_to_metric_families

from actgrad import Client
from actgrad_server.app import ActgradServer
from actgrad_server.config import Settings
from actgrad_server.engine import Engine

__all__ = [
    "SlowEngine",
    "make_client",
    "running",
    "sample",
    "scrape",
    "settings",
]


def settings(**changes: Any) -> Settings:
    """The integration tests' settings with `changes`; no access log unless asked."""
    changes.setdefault("access_log", False)
    return dataclasses.replace(TEST_SETTINGS, **changes)


@contextmanager
def running(config: Settings, *, engine: Engine | None = None) -> Iterator[ActgradServer]:
    """A started server; stopped (grace 0) and released on exit."""
    server = ActgradServer(config, engine=engine)
    server.start()
    try:
        yield server
    finally:
        server.stop(0)
        server.wait()


def make_client(kind: str, target: str, **options: Any) -> Any:
    """A sync `Client` or the async one behind the conftest adapter (same methods)."""
    options.setdefault("timeout", 30.0)
    if kind == "sync":
        return Client(target, **options)
    return AsyncAdapter(target, **options)


class SlowEngine(Engine):
    """An engine whose `activate` waits for `release` (a call held in flight).

    `entered` counts the calls that reached the engine; `wait_entered(n)` blocks
    until n did.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("device", "cpu")
        super().__init__(**kwargs)
        self.release = threading.Event()
        self.entered = 0
        self._cond = threading.Condition()
        self._armed = False

    def warm_up(self, dtypes: Any = ("float32",)) -> None:
        super().warm_up(dtypes)
        self._armed = True  # calls after the warm-up are held

    def activate(self, call: Any, x: Any, **kwargs: Any) -> Any:
        if not self._armed:
            return super().activate(call, x, **kwargs)
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        if not self.release.wait(timeout=60):
            raise RuntimeError("SlowEngine was never released")
        return super().activate(call, x, **kwargs)

    def wait_entered(self, count: int, timeout: float = 30.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.entered >= count, timeout=timeout):
                raise AssertionError(f"only {self.entered} of {count} calls reached the engine")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` whose labels include `labels`, None when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
