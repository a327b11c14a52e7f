"""Writes docs/functions.md and its figures (docs/functions/*.png) from the catalog.

Usage: .venv/bin/python scripts/generate_functions_doc.py [--text-only]

The text is a pure function of the catalog (`render_markdown`; a test compares it with
the committed page). The figures are computed in-process by the engine and drawn as
`actgrad plot --grad` draws them (`actgrad.cli.plot_figure`: f and f' on two titled
panels sharing the x axis), with matplotlib's Agg backend (the `plot` extra);
`--text-only` skips them.
`sample` is also what tests/unit/test_properties.py checks the declared properties
with.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "functions.md"
FIGURES = ROOT / "docs" / "functions"
#: The x range of every figure (relu6's upper kink at 6 inside it).
FIGURE_RANGE = (-7.0, 7.0)
#: One panel's size in inches and the resolution: 480 x 400 pixels for f and f'.
FIGURE_PANEL = (6.0, 2.5)
FIGURE_DPI = 80
FIGURE_COLOURS = 64

if str(ROOT / "server") not in sys.path:  # run as a file from a checkout
    sys.path.insert(0, str(ROOT / "server"))
    sys.path.insert(0, str(ROOT / "client"))

from actgrad_server import catalog  # noqa: E402
from actgrad_server.engine import Engine  # noqa: E402

Array = npt.NDArray[Any]


def sample(
    engine: Engine, function: catalog.Function, x: Array, **params: Any
) -> tuple[Array, Array]:
    """f(x) and f'(x) at a 1-D x, through the engine, at the defaults unless given.

    A required tensor parameter takes its declared sample (prelu's slope 0.25). A
    function that mixes values along an axis (softmax) is taken as one output as a
    function of its own logit, the other logit of a pair fixed at 0, as its
    declared properties are.
    """
    values = {
        p.name: np.asarray(p.sample, dtype=x.dtype)
        for p in function.params
        if p.required and p.kind is catalog.ParamKind.TENSOR
    }
    values.update(params)
    if function.elementwise:
        inputs, grad_output = x, np.ones_like(x)
    else:
        inputs = np.stack([x, np.zeros_like(x)], axis=-1)
        grad_output = np.zeros_like(inputs)
        grad_output[..., 0] = 1
    call = catalog.bind(function, values, x_shape=inputs.shape, x_dtype=inputs.dtype)
    y = engine.activate(call, inputs)
    dy = engine.gradient(call, inputs, grad_output).grad_input
    if not function.elementwise:
        y, dy = y[..., 0], dy[..., 0]
    return y, dy


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _range(properties: catalog.Properties) -> str:
    low, high = properties.output_range
    return f"[{_number(low)}, {_number(high)}]"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _default(param: catalog.Param) -> str:
    if param.required:
        return "required"
    if isinstance(param.default, bool):
        return str(param.default).lower()
    if isinstance(param.default, str):
        return f"'{param.default}'"
    return repr(param.default)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _function_section(function: catalog.Function) -> list[str]:
    props = function.properties
    lines = [f"## {function.name}", "", function.summary, ""]
    if function.aliases:
        aliases = ", ".join(f"`{a}`" for a in function.aliases)
        lines += [f"Aliases: {aliases}.", ""]
    lines += [f"`{function.formula}`", "", f"$${function.formula_latex}$$", ""]
    if function.params:
        lines += ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
        for p in function.params:
            lines.append(
                f"| `{p.name}` | {p.kind.value} | {_escape(_default(p))} | "
                f"{_escape(p.description)} |"
            )
        lines.append("")
    else:
        lines += ["No parameters.", ""]
    lines += [f"Gradient and kink convention: {function.gradient_note}", ""]
    lines += [
        f"Properties: range {_range(props)}; "
        + f"monotonic: {_yes(props.monotonic)}; C1: {_yes(props.smooth)}; "
        + f"f(0) = 0: {_yes(props.zero_centred)}; "
        + f"bounded below: {_yes(props.bounded_below)}, above: {_yes(props.bounded_above)}; "
        + f"saturating left: {_yes(props.saturating_left)}, "
        + f"right: {_yes(props.saturating_right)}."
        + (f" They hold {props.condition}." if props.condition else ""),
        "",
        f"![{function.name} and its derivative](functions/{function.name}.png)",
        "",
    ]
    samples = [
        f"{p.name} = {p.sample:g}"
        for p in function.params
        if p.required and p.kind is catalog.ParamKind.TENSOR
    ]
    if samples:
        lines[-2:-1] = [lines[-2], "", f"The figure is drawn at {', '.join(samples)}."]
    return lines


def render_markdown() -> str:
    """The whole page, from the catalog alone."""
    low, high = FIGURE_RANGE
    lines = [
        "# Functions",
        "",
        "<!-- Generated from server/actgrad_server/catalog.py by",
        "     scripts/generate_functions_doc.py; do not edit by hand. -->",
        "",
        "Every served function: its formula, parameters and defaults, the gradient's",
        "convention at kinks (PyTorch autograd's), its properties, and a figure of f",
        f"(above) and f' (below, on a scale of its own) over [{low:g}, {high:g}] at the",
        "defaults, drawn as `actgrad plot --grad` draws them. The page and",
        "the figures are generated from the catalog, which `ListFunctions` also serves",
        "(the SDK's `FunctionInfo.properties`): run",
        "`.venv/bin/python scripts/generate_functions_doc.py` after changing it (a test",
        "fails while this page is out of date). `actgrad plot` draws any function through",
        "a running server. Back to the [README](../README.md).",
        "",
        "Properties: the range is the closure of f's values (an open end such as",
        "sigmoid's 0 is approached, a closed one such as relu's 0 is reached); monotonic",
        "means non-decreasing; C1 continuously differentiable; saturating that f' tends to",
        "0 as x -> -inf (left) or +inf (right). tests/unit/test_properties.py samples every",
        "function and its gradient and checks each declared property, true or false.",
        "",
        "| function | range | monotonic | C1 | f(0) = 0 | saturating left | saturating right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for function in catalog.CATALOG:
        p = function.properties
        lines.append(
            f"| [`{function.name}`](#{function.name}) | {_range(p)} | {_yes(p.monotonic)} | "
            f"{_yes(p.smooth)} | {_yes(p.zero_centred)} | {_yes(p.saturating_left)} | "
            f"{_yes(p.saturating_right)} |"
        )
    lines.append("")
    for function in catalog.CATALOG:
        lines += _function_section(function)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_figures(engine: Engine, folder: Path) -> None:
    """One PNG per function: f and f' at the defaults over FIGURE_RANGE, on two panels."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    import matplotlib.pyplot as plt
    from PIL import Image  # matplotlib's own dependency

    from actgrad.cli import plot_figure

    folder.mkdir(parents=True, exist_ok=True)
    x = np.linspace(*FIGURE_RANGE, 1401)
    for function in catalog.CATALOG:
        y, dy = sample(engine, function, x)
        fig = plot_figure(plt, x, [(function.name, y, dy)], grad=True, panel_size=FIGURE_PANEL)
        drawn = io.BytesIO()
        fig.savefig(drawn, format="png", dpi=FIGURE_DPI)
        plt.close(fig)
        # A 64-colour palette looks the same as Agg's RGBA and weighs under a third
        # (25 figures: 151 kB, not 530 kB); Pillow writes no software version into the
        # file, so regenerating with the same result is no diff.
        with Image.open(drawn) as image:
            palette = image.convert("RGB").quantize(FIGURE_COLOURS)
        palette.save(folder / f"{function.name}.png", format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-only", action="store_true", help="do not redraw the figures")
    args = parser.parse_args(argv)
    PAGE.write_text(render_markdown(), encoding="utf-8")
    if not args.text_only:
        write_figures(Engine(device="cpu"), FIGURES)
    print(f"wrote {PAGE.relative_to(ROOT)}" + ("" if args.text_only else " and its figures"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
