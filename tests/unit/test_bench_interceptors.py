"""`python -m bench.interceptors` at its smallest: it runs, checks its answers, reports.

A benchmark is not a test: nothing here looks at a time beyond its being positive.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import interceptors


def test_measure_reports_both_paths() -> None:
    result = interceptors.measure(calls=20, rounds=2)
    assert result.calls == 20 and result.rounds == 2
    assert result.bare_us > 0 and result.intercepted_us > 0


def test_main_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert interceptors.main(["--calls", "10", "--rounds", "1", "--access-log"]) == 0
    out = capsys.readouterr().out
    assert "interceptors" in out and "us per call" in out
