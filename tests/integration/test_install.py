"""The installed project wins over a folder named like its packages.

A script run from the folder holding the clone (named `actgrad`, as git names it) has
that folder first on sys.path; setuptools' editable finder runs after the path search,
which took the clone for an empty namespace package (`cannot import name 'Client' from
'actgrad' (unknown location)`). `make install` and `make serve` also put client/ and
server/ on sys.path (a .pth file), where a regular package beats any namespace folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """\
import actgrad, actgrad_server
from actgrad import Client
print(actgrad.__file__)
print(actgrad_server.__file__)
"""


def test_a_folder_named_like_the_package_does_not_shadow_it(tmp_path: Path) -> None:
    for name in ("actgrad", "actgrad_server"):
        (tmp_path / name).mkdir()  # as the clone seen from its parent: no __init__.py
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{done.stderr}\n(run `make install` to refresh the venv)"
    assert done.stdout.splitlines() == [
        str(REPO / "client" / "actgrad" / "__init__.py"),
        str(REPO / "server" / "actgrad_server" / "__init__.py"),
    ]
