"""What every test folder shares: the PyTorch cross-checks, skipped loudly without torch.

torch's CPU build is not on PyPI (whose torch for Linux is a multi-GB CUDA build), so
the dev lock leaves it out and `make torch` installs it where it is at hand. A test
module that needs torch gets it with `torch = pytest.importorskip("torch")`, or by
importing tests/unit/torch_reference.py, which does that first; never with a plain
`import torch` (tests/unit/test_torch_gate.py checks). Without torch those modules are
skipped, and the end of the run says so in a banner: how many, which, and how to
install it. ACTGRAD_REQUIRE_TORCH=1 (set by CI) refuses to run without torch instead.
"""

from __future__ import annotations

import os
import re

import pytest

#: tests/containers needs a container engine and minutes (make test-containers runs it,
#: naming the folder); a plain `pytest` (make test) leaves it out.
collect_ignore = ["containers"]

#: Set to 1 where the PyTorch cross-checks must run (CI): a missing torch is an error.
REQUIRE_TORCH = "ACTGRAD_REQUIRE_TORCH"
#: A skip whose reason names torch (pytest.importorskip's: "could not import 'torch'").
_TORCH_REASON = re.compile(r"\btorch\b")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(REQUIRE_TORCH) != "1":
        return
    try:
        import torch  # noqa: F401 (imported to know that it imports)
    except ImportError as exc:
        raise pytest.UsageError(
            f"{REQUIRE_TORCH}=1, but torch does not import ({exc}): run `make torch`"
        ) from exc


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if _TORCH_REASON.search(_skip_reason(report))
    ]
    if not skipped:
        return
    modules = sorted(r.nodeid for r in skipped if isinstance(r, pytest.CollectReport))
    tests = sorted(r.nodeid for r in skipped if not isinstance(r, pytest.CollectReport))
    write = terminalreporter.write_line
    terminalreporter.section("PyTorch cross-checks NOT RUN", sep="!", red=True, bold=True)
    write(f"torch is missing: {len(modules)} test modules and {len(tests)} tests were skipped")
    write(f"({_skip_reason(skipped[0])}):", red=True)
    for nodeid in modules + tests:
        write(f"    {nodeid}")
    write("Install PyTorch's CPU build with `make torch` (docs/development.md); where pip")
    write("cannot find it: make torch TORCH_INDEX=https://download.pytorch.org/whl/cpu")
    write(f"{REQUIRE_TORCH}=1 makes a missing torch an error (CI sets it).")
