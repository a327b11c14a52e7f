"""The playground page's files travel in the wheel: pyproject.toml's package data
names each one the page serves (an installed server without them would fail at start)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from actgrad_server.http import playground

ROOT = Path(__file__).resolve().parents[2]
FOLDER = "actgrad_server.http.static"


def test_every_served_file_is_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert FOLDER in setuptools["packages"]
    patterns = setuptools["package-data"][FOLDER]
    folder = ROOT / "server" / "actgrad_server" / "http" / "static"
    for name in playground.ASSETS:
        assert (folder / name).is_file(), name
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
    assert sorted(p.name for p in folder.iterdir()) == sorted(playground.ASSETS)
    assert playground.page_bytes() == sum((folder / n).stat().st_size for n in playground.ASSETS)
