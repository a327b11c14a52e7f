"""The PyTorch cross-checks are skipped loudly where torch is missing, never silently.

torch is not in the dev lock (`make torch` installs its CPU build): every test module
that needs it gets it through `pytest.importorskip("torch")`, itself or by importing
torch_reference, and tests/conftest.py ends the run with a banner naming what was
skipped, or refuses to run under ACTGRAD_REQUIRE_TORCH=1 (CI).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
#: Two modules that need torch, one per folder (the integration one starts no server:
#: it is skipped at import).
TORCH_MODULES = ["tests/unit/test_flow_torch.py", "tests/integration/test_torch_autograd.py"]


def _is_gate(node: ast.stmt) -> bool:
    """`pytest.importorskip("torch")` as a statement, or `import torch_reference`."""
    if isinstance(node, ast.Import):
        return any(alias.name == "torch_reference" for alias in node.names)
    value = node.value if isinstance(node, ast.Assign | ast.Expr) else None
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "importorskip"
        and bool(value.args)
        and isinstance(value.args[0], ast.Constant)
        and value.args[0].value == "torch"
    )


def _imports_torch(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "torch" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "torch" and node.level == 0
    return False


def test_torch_is_imported_only_behind_the_gate() -> None:
    """A plain `import torch` would fail collection where torch is missing (a PyPI-only
    machine) instead of skipping: every import of torch in tests/ comes after a
    module-level gate."""
    ungated = []
    for path in sorted(TESTS.rglob("*.py")):
        # conftest.py imports torch on purpose, where ACTGRAD_REQUIRE_TORCH=1 needs it.
        if "node_modules" in path.parts or path == TESTS / "conftest.py":
            continue
        body = ast.parse(path.read_text(), str(path)).body
        gate = next((i for i, node in enumerate(body) if _is_gate(node)), len(body))
        for i, node in enumerate(body):
            late = [n for n in ast.walk(node) if _imports_torch(n)]
            if late and i < gate:
                ungated.append(f"{path.relative_to(REPO)}:{late[0].lineno}")
    assert not ungated, f'import torch before `torch = pytest.importorskip("torch")`: {ungated}'


def _pytest_without_torch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on TORCH_MODULES in a process where `import torch` fails."""
    (tmp_path / "no_torch.py").write_text('import sys\n\nsys.modules["torch"] = None\n')
    environ = {k: v for k, v in os.environ.items() if k != "ACTGRAD_REQUIRE_TORCH"}
    environ["PYTHONPATH"] = str(tmp_path)
    command = [sys.executable, "-m", "pytest", "-p", "no_torch", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, *TORCH_MODULES],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_missing_torch_skips_with_a_banner(tmp_path: Path) -> None:
    done = _pytest_without_torch(tmp_path)
    # Skipped at import, so nothing was collected: exit 5, which a run of the whole
    # suite (other tests passing) does not have.
    assert done.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, done.stdout + done.stderr
    assert "PyTorch cross-checks NOT RUN" in done.stdout, done.stdout
    assert "torch is missing: 2 test modules and 0 tests were skipped" in done.stdout
    for module in TORCH_MODULES:
        assert f"    {module}\n" in done.stdout
    assert "make torch" in done.stdout


def test_required_torch_missing_is_an_error(tmp_path: Path) -> None:
    done = _pytest_without_torch(tmp_path, ACTGRAD_REQUIRE_TORCH="1")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "ACTGRAD_REQUIRE_TORCH=1, but torch does not import" in done.stderr
    assert "make torch" in done.stderr
