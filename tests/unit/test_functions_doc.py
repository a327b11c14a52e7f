"""docs/functions.md is generated from the catalog: the committed page must be what the
script writes now (the text, not the PNG bytes), every function has its figure, and the
README links the page."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from actgrad_server import catalog
from actgrad_server.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "generate_functions_doc", ROOT / "scripts" / "generate_functions_doc.py"
)
assert _spec is not None and _spec.loader is not None
doc_script: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(doc_script)

REGENERATE = ".venv/bin/python scripts/generate_functions_doc.py"


def test_the_page_is_up_to_date_with_the_catalog() -> None:
    committed = (ROOT / "docs" / "functions.md").read_text(encoding="utf-8")
    assert committed == doc_script.render_markdown(), f"stale docs/functions.md: run {REGENERATE}"


def test_every_function_has_a_section_and_a_figure() -> None:
    page = doc_script.render_markdown()
    for function in catalog.CATALOG:
        assert f"\n## {function.name}\n" in page
        assert f"(functions/{function.name}.png)" in page
        figure = ROOT / "docs" / "functions" / f"{function.name}.png"
        assert figure.is_file(), f"missing {figure.relative_to(ROOT)}: run {REGENERATE}"
    names = {f.name for f in catalog.CATALOG}
    stray = {p.stem for p in (ROOT / "docs" / "functions").glob("*.png")} - names
    assert not stray, f"figures of no function: {sorted(stray)}"


def test_the_figures_are_drawn(tmp_path: Path) -> None:
    doc_script.write_figures(Engine(device="cpu"), tmp_path)
    for function in catalog.CATALOG:
        assert (tmp_path / f"{function.name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_links_the_page() -> None:
    assert "(docs/functions.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
