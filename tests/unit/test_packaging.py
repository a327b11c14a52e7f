"""The wheel holds every package of the source tree (an editable install would hide a
missing one: its path finder sees the folders; a built image would not start)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(base).parts
            found.add(".".join((name, *relative)))
    assert found - listed == set(), "packages missing from pyproject's [tool.setuptools]"
    # A folder of data only (the playground's files) is a package without __init__.py.
    dirs = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    for name in listed - found:
        top, *rest = name.split(".")
        assert dirs[top].joinpath(*rest).is_dir(), f"{name}: listed, but no such folder"
