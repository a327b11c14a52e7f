"""The ``actgrad`` command: call a server from the shell, or start one.

Examples::

    actgrad functions                       # the catalog as a table (--json for JSON)
    actgrad call relu -1 0 2                # 0.0 0.0 2.0
    actgrad call leaky_relu -1 2 --param alpha=0.1 --dtype float32
    actgrad call prelu -1 -2 2 --param slope=0.1,0.2,0.3
    actgrad grad gelu -1 0 1 --grad-output 1 1 0.5 --param approximate=tanh
    actgrad softmax 1 2 3 4 --shape 2 2 --axis 0 --temperature 0.5
    actgrad dense 1 2 --weight 0.5 -0.25 --bias 0.1 --activation sigmoid [--grad]
    actgrad flow sigmoid tanh --depth 30 --init xavier_normal he_normal --plot flow.png
    actgrad info
    actgrad health --timeout 3              # exit 0 only when the server says SERVING
    actgrad plot gelu swish --grad -o act.png   # f (and f') through the server: actgrad[plot]
    actgrad serve --help                    # needs the clone's server extra: '.[server]'
    actgrad export-triton repo/ --functions gelu   # a Triton model repository (server package)

Negative numbers are values, not options (``-1``, ``-1e-3``, ``-inf``); ``--``
also ends the options as usual. Values are float64 unless ``--dtype`` says
otherwise, as the SDK takes Python numbers and lists (a numpy array keeps its own
dtype there); results come back in that dtype. ``--target`` defaults to ``$ACTGRAD_TARGET``,
else localhost:50051; ``--ca-file``, ``--cert-file``/``--key-file`` and
``--token-file`` connect to a server with TLS, mutual TLS or bearer tokens. A
failed call prints ``error: <CODE>: <details>`` to stderr and exits with 1;
``health`` exits with 1 when the status is not SERVING; a bad command line exits
with 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from actgrad import __version__, wire
from actgrad._channel import DEFAULT_TARGET, DEFAULT_TIMEOUT, FIRST_CONTACT_SECONDS
from actgrad._client import Client
from actgrad._types import FunctionInfo, ParamInfo, ServerInfo
from actgrad.errors import ActgradError

__all__ = ["build_parser", "main", "parse_param", "plot_figure"]

TARGET_ENV = "ACTGRAD_TARGET"
_DTYPE_NAMES = [info.name for info in wire.DTYPES]
# The dtype the SDK gives Python numbers and lists: the CLI's values are those.
_VALUES_DTYPE = wire.to_float_array([0.0]).dtype.name
_SERVER_HINT = (
    "install the server extra of your actgrad clone (PyPI's 'actgrad' is another "
    "project): pip install '/path/to/actgrad[server]' (`make serve` has it)"
)
_PLOT_HINT = (
    "install it with the plot extra of your actgrad clone (PyPI's 'actgrad' is another "
    "project): pip install '/path/to/actgrad[plot]' (`make install` has it)"
)

# A handler prints its result; it may return an exit status (None = 0).
Handler = Callable[[Client, argparse.Namespace, TextIO], int | None]


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Runs the ``actgrad`` command and returns its exit status.

    Example: ``main(["call", "relu", "-1", "0", "2"])`` prints ``0.0 0.0 2.0``.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve":
        return _serve(args_list[1:])
    if args_list and args_list[0] == "export-triton":
        return _export_triton(args_list[1:])
    env = os.environ if environ is None else environ
    parser = build_parser(default_target=env.get(TARGET_ENV) or DEFAULT_TARGET)
    args = parser.parse_args(protect_negative_numbers(args_list))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        security = _security_options(args)
        with Client(
            args.target,
            timeout=args.timeout,
            wait_for_ready=args.wait_for_ready,
            **security,
        ) as client:
            status = handler(client, args, sys.stdout)
    except ActgradError as exc:
        print(f"error: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 1
    except (TypeError, ValueError, OSError) as exc:
        # Refused before any call (a shape that does not fit, a bad parameter type,
        # a certificate file that cannot be read).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status or 0


def build_parser(*, default_target: str = DEFAULT_TARGET) -> argparse.ArgumentParser:
    """The argument parser of every command but ``serve`` (delegated to the server).

    Example: ``build_parser().parse_args(["info", "--target", "host:50051"])``.
    """
    parser = argparse.ArgumentParser(
        prog="actgrad",
        description="Activation functions and their gradients, served over gRPC.",
        epilog="Negative numbers are read as values; '--' also ends the options.",
    )
    parser.add_argument("--version", action="version", version=f"actgrad {__version__}")
    parser.set_defaults(command=None)

    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--target",
        default=default_target,
        help=f"server address (default: ${TARGET_ENV} or {DEFAULT_TARGET}; now {default_target})",
    )
    connection.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        help=f"deadline of the call in seconds (default: {DEFAULT_TIMEOUT})",
    )
    connection.add_argument(
        "--wait-for-ready",
        action="store_true",
        help=(
            "wait for a server that cannot be reached yet (one starting) within --timeout; "
            f"by default a target that does not answer fails in about {FIRST_CONTACT_SECONDS:g} s "
            "with UNAVAILABLE"
        ),
    )
    connection.add_argument(
        "--ca-file", metavar="PEM", help="CA certificate of the server's TLS certificate"
    )
    connection.add_argument(
        "--cert-file", metavar="PEM", help="client certificate chain (mutual TLS)"
    )
    connection.add_argument("--key-file", metavar="PEM", help="private key of --cert-file")
    connection.add_argument(
        "--tls", action="store_true", help="use TLS with the system's roots (implied by --ca-file)"
    )
    connection.add_argument(
        "--token-file", metavar="FILE", help="file holding a bearer token (first line)"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.add_parser(
        "serve", help="start the server (needs actgrad[server]; see 'actgrad serve --help')"
    )
    commands.add_parser(
        "export-triton",
        help="write a Triton model repository (needs actgrad[server]; see --help)",
    )

    functions = commands.add_parser(
        "functions", parents=[connection], help="list the served functions"
    )
    functions.add_argument("--json", action="store_true", help="print JSON instead of a table")
    functions.set_defaults(command="functions", handler=_cmd_functions)

    call = commands.add_parser("call", parents=[connection], help="apply a function to values")
    call.add_argument("function", metavar="FUNCTION", help="function name or alias")
    _add_tensor_arguments(call)
    _add_param_argument(call)
    call.set_defaults(command="call", handler=_cmd_call)

    grad = commands.add_parser(
        "grad", parents=[connection], help="gradient of a function at values (a VJP)"
    )
    grad.add_argument("function", metavar="FUNCTION", help="function name or alias")
    _add_tensor_arguments(grad)
    _add_param_argument(grad)
    grad.add_argument(
        "--grad-output",
        nargs="+",
        type=float,
        metavar="VALUE",
        help="upstream gradient, same count as VALUES (default: ones)",
    )
    grad.set_defaults(command="grad", handler=_cmd_grad)

    softmax = commands.add_parser(
        "softmax", parents=[connection], help="softmax of values along an axis"
    )
    _add_tensor_arguments(softmax)
    softmax.add_argument("--axis", type=int, default=-1, help="axis (default: -1)")
    softmax.add_argument(
        "--temperature", type=float, default=1.0, help="divide by this first (default: 1.0)"
    )
    softmax.add_argument("--log", action="store_true", help="log-softmax")
    softmax.set_defaults(command="softmax", handler=_cmd_softmax)

    dense = commands.add_parser(
        "dense",
        parents=[connection],
        help="a dense layer f(x . W^T + b) (and its gradients with --grad)",
    )
    _add_tensor_arguments(dense)
    _add_dense_arguments(dense)
    dense.set_defaults(command="dense", handler=_cmd_dense)

    flow = commands.add_parser(
        "flow",
        parents=[connection],
        help="how gradients survive a deep network, per function and init (GradientFlow)",
    )
    _add_flow_arguments(flow)
    flow.set_defaults(command="flow", handler=_cmd_flow)

    info = commands.add_parser("info", parents=[connection], help="server version and limits")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(command="info", handler=_cmd_info)

    health = commands.add_parser(
        "health",
        parents=[connection],
        help="grpc.health.v1 status; exits 0 only when SERVING",
    )
    health.add_argument(
        "--service", default="", help="service to check (default: '', the whole server)"
    )
    health.set_defaults(command="health", handler=_cmd_health)

    plot = commands.add_parser(
        "plot",
        parents=[connection],
        help="draw functions (and their derivatives) into a PNG (needs actgrad[plot])",
    )
    plot.add_argument("functions", nargs="+", metavar="FUNCTION", help="function names or aliases")
    plot.add_argument(
        "--grad", action="store_true", help="also draw f', on a panel of its own under f"
    )
    plot.add_argument(
        "--range",
        nargs=2,
        type=float,
        default=[-6.0, 6.0],
        metavar=("LOW", "HIGH"),
        help="x range (default: -6 6)",
    )
    plot.add_argument(
        "--points", type=int, default=1001, help="samples over the range (default: 1001)"
    )
    _add_param_argument(plot)
    plot.add_argument("-o", "--output", required=True, metavar="FILE.png", help="image to write")
    plot.set_defaults(command="plot", handler=_cmd_plot)

    return parser


def _add_tensor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("values", nargs="+", type=float, metavar="VALUES", help="input values")
    parser.add_argument(
        "--dtype",
        choices=_DTYPE_NAMES,
        default=_VALUES_DTYPE,
        help=f"input dtype, also the result's (default: {_VALUES_DTYPE}, what the SDK makes of "
        "a Python list; a numpy array keeps its own dtype there)",
    )
    parser.add_argument(
        "--shape", nargs="+", type=int, metavar="DIM", help="reshape the values (e.g. 2 3)"
    )


def _add_param_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        type=parse_param,
        default=[],
        metavar="NAME=VALUE",
        help="function parameter: true/false, an int, a float, a list (0.1,0.2 or "
        "[0.1, 0.2]; converted to --dtype) or a string; repeatable",
    )


def _add_dense_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weight",
        nargs="+",
        type=float,
        required=True,
        metavar="VALUE",
        help="weight values, row by row: [out, in] with in = the input's last dimension",
    )
    parser.add_argument("--bias", nargs="+", type=float, metavar="VALUE", help="bias, [out]")
    parser.add_argument(
        "--activation",
        metavar="FUNCTION",
        help="function name or alias applied to the net output (default: none, z itself)",
    )
    _add_param_argument(parser)
    parser.add_argument(
        "--grad",
        action="store_true",
        help="also print grad_input, grad_weight, grad_bias (and parameter gradients) after "
        "the output",
    )
    parser.add_argument(
        "--grad-output",
        nargs="+",
        type=float,
        metavar="VALUE",
        help="upstream gradient with --grad, [..., out] (default: ones)",
    )


def _add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("functions", nargs="+", metavar="FUNCTION", help="function names")
    parser.add_argument("--depth", type=int, default=30, help="layers (default: 30)")
    parser.add_argument("--width", type=int, default=256, help="units per layer (default: 256)")
    parser.add_argument("--batch", type=int, default=128, help="samples (default: 128)")
    parser.add_argument(
        "--init",
        nargs="+",
        default=["xavier_normal"],
        metavar="INIT",
        help="weight initialisations, one run each: xavier_normal (default), xavier_uniform, "
        "he_normal, he_uniform, lecun_normal, normal (with --init-std)",
    )
    parser.add_argument("--init-std", type=float, help="std of --init normal")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed (default: 0)")
    parser.add_argument("--residual", action="store_true", help="h_l = f(z_l) + h_{l-1}")
    parser.add_argument(
        "--normalize", action="store_true", help="standardise z_l over the batch first"
    )
    parser.add_argument(
        "--dtype",
        choices=_DTYPE_NAMES,
        default="float64",
        help="float32 or float64 (default: float64)",
    )
    _add_param_argument(parser)
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also draw grad_rms per layer (needs matplotlib)"
    )


def protect_negative_numbers(argv: Sequence[str]) -> list[str]:
    """Marks tokens like ``-1e-3`` or ``-inf`` as values rather than options.

    argparse only recognises ``-1`` and ``-.5`` as negative numbers. A leading
    space keeps any other float-looking token from being taken for an option,
    and ``float()``/``int()`` ignore it.
    """
    protected = []
    for token in argv:
        if token.startswith("-") and not token.startswith("--") and _is_float(token):
            token = " " + token
        protected.append(token)
    return protected


def parse_param(text: str) -> tuple[str, Any]:
    """Parses ``NAME=VALUE`` for ``--param``: ``"alpha=0.1"`` -> ``("alpha", 0.1)``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, wire.parse_param_value(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands --------------------------------------------------------------------


def _cmd_functions(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    functions = client.functions()
    if args.json:
        json.dump([dataclasses.asdict(f) for f in functions], out, indent=2)
        out.write("\n")
        return
    rows = [("NAME", "ALIASES", "PARAMS")] + [_function_row(f) for f in functions]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, aliases, params in rows:
        out.write(f"{name:<{widths[0]}}  {aliases:<{widths[1]}}  {params}".rstrip() + "\n")


def _cmd_call(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    x = _input_array(args.values, args)
    out.write(format_values(client.activate(x, args.function, **dict(args.params))) + "\n")


def _cmd_grad(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    x = _input_array(args.values, args)
    grad_output = None if args.grad_output is None else _input_array(args.grad_output, args)
    result = client.vjp(x, args.function, grad_output=grad_output, **dict(args.params))
    out.write(format_values(result.grad_input) + "\n")
    for name, value in result.grad_params.items():
        out.write(f"{name}: {format_values(value)}\n")


def _cmd_softmax(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    x = _input_array(args.values, args)
    y = client.softmax(x, axis=args.axis, temperature=args.temperature, log=args.log)
    out.write(format_values(y) + "\n")


def _cmd_dense(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    x = _input_array(args.values, args)
    in_features = x.shape[-1]
    weight = np.asarray(args.weight, dtype=x.dtype)
    if weight.size % in_features:
        raise ValueError(
            f"{weight.size} --weight values do not fit [out, {in_features}] (the input's last "
            "dimension)"
        )
    weight = weight.reshape(-1, in_features)
    bias = None if args.bias is None else np.asarray(args.bias, dtype=x.dtype)
    params = dict(args.params)
    if not args.grad:
        if args.grad_output is not None:
            raise ValueError("--grad-output needs --grad")
        y = client.dense(x, weight, bias, activation=args.activation, **params)
        out.write(f"output: {format_values(y)}\n")
        return
    grad_output = None
    if args.grad_output is not None:
        grad_output = np.asarray(args.grad_output, dtype=x.dtype)
        z_shape = (*x.shape[:-1], weight.shape[0])
        if grad_output.size != math.prod(z_shape):
            raise ValueError(
                f"{grad_output.size} --grad-output values do not fit the output's shape "
                f"{list(z_shape)}"
            )
        grad_output = grad_output.reshape(z_shape)
    result = client.dense_vjp(
        x,
        weight,
        bias,
        activation=args.activation,
        grad_output=grad_output,
        return_output=True,
        **params,
    )
    assert result.output is not None  # asked for
    out.write(f"output: {format_values(result.output)}\n")
    out.write(f"grad_input: {format_values(result.grad_input)}\n")
    out.write(f"grad_weight: {format_values(result.grad_weight)}\n")
    out.write(f"grad_bias: {format_values(result.grad_bias)}\n")
    for name, value in result.grad_params.items():
        out.write(f"{name}: {format_values(value)}\n")


def _cmd_flow(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    pyplot = _pyplot() if args.plot else None  # refused before any call when missing
    runs = []
    for function in args.functions:
        for init in args.init:
            result = client.gradient_flow(
                function,
                depth=args.depth,
                width=args.width,
                batch=args.batch,
                init=init,
                init_std=args.init_std if init == "normal" else None,
                seed=args.seed,
                residual=args.residual,
                normalize=args.normalize,
                dtype=args.dtype,
                **dict(args.params),
            )
            label = f"{function} ({init})"
            runs.append((label, result))
            _write_flow_table(out, label, args, result)
    if pyplot is not None:
        figure, axes = pyplot.subplots(figsize=(7, 4.5))
        for label, result in runs:
            axes.semilogy(range(len(result.grad_rms)), result.grad_rms, label=label)
        options = [o for o in ("residual", "normalize") if getattr(args, o)]
        axes.set_title(
            f"grad_rms per layer: depth {args.depth}, width {args.width}, batch {args.batch}"
            + (f", {' + '.join(options)}" if options else "")
        )
        axes.set_xlabel("layer l (0 = input)")
        axes.set_ylabel("RMS of dLoss/dh_l")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)
        pyplot.close(figure)
        out.write(f"plot: {args.plot}\n")


def _write_flow_table(out: TextIO, label: str, args: argparse.Namespace, result: Any) -> None:
    options = "".join(f", {o}" for o in ("residual", "normalize") if getattr(args, o))
    out.write(f"{label}, depth {args.depth}, width {args.width}, batch {args.batch}{options}\n")
    out.write(f"{'layer':>5}  {'act_rms':>10}  {'grad_rms':>10}  {'saturated':>9}  {'dead':>6}\n")
    for layer in range(len(result.grad_rms)):
        saturated = dead = "-"
        if layer > 0:
            saturated = f"{result.saturated[layer - 1]:.4f}"
            dead = f"{result.dead[layer - 1]:.4f}"
        out.write(
            f"{layer:>5}  {result.act_rms[layer]:>10.3e}  {result.grad_rms[layer]:>10.3e}  "
            f"{saturated:>9}  {dead:>6}\n"
        )
    out.write(f"ratio grad_rms[0] / grad_rms[{args.depth}]: {result.ratio:.3e}\n\n")


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or ValueError saying how to get it."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise ValueError(f"--plot needs matplotlib, which is not installed; {_PLOT_HINT}") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _cmd_info(client: Client, args: argparse.Namespace, out: TextIO) -> None:
    info: ServerInfo = client.server_info()
    if args.json:
        json.dump(dataclasses.asdict(info), out, indent=2)
        out.write("\n")
        return
    for key, value in dataclasses.asdict(info).items():
        if key == "limits":
            for limit, number in value.items():
                out.write(f"{limit}: {number}\n")
        elif isinstance(value, list):
            out.write(f"{key}: {', '.join(value)}\n")
        else:
            out.write(f"{key}: {value}\n")


def _cmd_health(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    status = client.health(args.service)
    out.write(status + "\n")
    return 0 if status == "SERVING" else 1


def _cmd_plot(client: Client, args: argparse.Namespace, out: TextIO) -> int | None:
    pyplot = _import_pyplot()
    if pyplot is None:
        return 2
    low, high = args.range
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"--range: need finite LOW < HIGH, got {low:g} {high:g}")
    if args.points < 2:
        raise ValueError(f"--points: need at least 2, got {args.points}")
    known = {name: f for f in client.functions() for name in (f.name, *f.aliases)}
    infos = [known.get(name.strip().lower().replace("-", "_")) for name in args.functions]
    params = dict(args.params)
    found = [info for info in infos if info is not None]
    unused = set(params) - {p.name for info in found for p in info.params}
    if unused and len(found) == len(infos):  # else the server names the unknown function
        raise ValueError(f"--param {sorted(unused)[0]}: none of {' '.join(args.functions)} has it")
    x = np.linspace(low, high, args.points)
    curves = []
    for name, info in zip(args.functions, infos, strict=True):
        # Each function gets the parameters it declares (--param alpha=0.1 for several).
        own = (
            params
            if info is None
            else {p.name: params[p.name] for p in info.params if p.name in params}
        )
        y, dy = _sample(client, name, info, x, own)
        shown = ", ".join(f"{k}={v}" for k, v in own.items())
        curves.append((f"{name} ({shown})" if shown else name, y, dy))
    fig = plot_figure(pyplot, x, curves, grad=args.grad)
    try:
        fig.savefig(args.output)
    finally:
        pyplot.close(fig)
    out.write(f"wrote {args.output}\n")
    return None


def plot_figure(
    pyplot: Any,
    x: npt.NDArray[Any],
    curves: Sequence[tuple[str, npt.NDArray[Any], npt.NDArray[Any]]],
    *,
    grad: bool,
    panel_size: tuple[float, float] = (7.0, 3.4),
) -> Any:
    """f on one panel and, with `grad`, f' on a second one under it, sharing the x axis
    (as the playground page draws them): f' keeps a scale of its own instead of being
    squashed onto f's. Each panel has its title and y label; a function has one colour.

    `curves` holds (label, f(x), f'(x)) per function; `panel_size` is one panel's
    (width, height) in inches. `actgrad plot` and docs/functions.md's figures both draw
    with it. The caller saves and closes the figure::

        fig = plot_figure(pyplot, x, [("relu", y, dy)], grad=True)
        fig.savefig("relu.png")
        pyplot.close(fig)
    """
    names = ", ".join(label for label, _, _ in curves)
    rows = 2 if grad else 1
    width, height = panel_size
    fig, axes = pyplot.subplots(rows, 1, sharex=True, figsize=(width, height * rows), squeeze=False)
    panels = [(axes[0][0], "f(x)", 1)] + ([(axes[1][0], "f'(x)", 2)] if grad else [])
    for ax, what, column in panels:
        ax.axhline(0, color="0.7", linewidth=0.8)
        for label, *values in curves:
            ax.plot(x, values[column - 1], label=label)
        ax.set_title(f"{what}: {names}", fontsize=10)
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    panels[-1][0].set_xlabel("x")
    fig.tight_layout()
    return fig


def _sample(
    client: Client,
    name: str,
    info: FunctionInfo | None,
    x: npt.NDArray[np.float64],
    params: dict[str, Any],
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """f(x) and f'(x) through the server. A function that mixes values along an axis
    (softmax) is drawn as one output against its own logit, the other of a pair at 0."""
    if info is None or info.elementwise:
        inputs, grad_output = x, np.ones_like(x)
    else:
        inputs = np.stack([x, np.zeros_like(x)], axis=-1)
        grad_output = np.zeros_like(inputs)
        grad_output[..., 0] = 1
    y = client.activate(inputs, name, **params)
    dy = client.vjp(inputs, name, grad_output=grad_output, **params).grad_input
    if info is not None and not info.elementwise:
        y, dy = y[..., 0], dy[..., 0]
    return y, dy


def _import_pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None (after saying so) without it."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        print(
            f"error: 'actgrad plot' needs matplotlib ({exc}); {_PLOT_HINT}",
            file=sys.stderr,
        )
        return None
    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    return importlib.import_module("matplotlib.pyplot")


def _security_options(args: argparse.Namespace) -> dict[str, Any]:
    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    given = {
        "root_certificates": read(args.ca_file),
        "certificate_chain": read(args.cert_file),
        "private_key": read(args.key_file),
    }
    # Only what was asked for: a plain command line builds a plain Client.
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if args.tls:
        options["tls"] = True
    if args.token_file is not None:
        lines = Path(args.token_file).read_text().splitlines()
        options["token"] = lines[0].strip() if lines else ""
    return options


# -- formatting and input --------------------------------------------------------


def format_values(array: npt.NDArray[Any]) -> str:
    """Values on one line, space-separated, each at its dtype's shortest exact repr.

    Example: ``format_values(np.array([0.1, -2.0], np.float32))`` is ``"0.1 -2.0"``.
    """
    # str() of a numpy scalar is the shortest string that reads back to the same
    # value of its own dtype (float32 0.1 prints as 0.1, not 0.10000000149).
    return " ".join(str(value) for value in np.asarray(array).ravel())


def _input_array(values: list[float], args: argparse.Namespace) -> npt.NDArray[Any]:
    array = np.asarray(values, dtype=np.float64).astype(wire.dtype_info(args.dtype).numpy)
    if args.shape is not None:
        try:
            array = array.reshape(args.shape)
        except ValueError as exc:
            raise ValueError(
                f"{len(values)} values do not fit --shape {' '.join(map(str, args.shape))}"
            ) from exc
    return array


def _function_row(function: FunctionInfo) -> tuple[str, str, str]:
    return (
        function.name,
        ", ".join(function.aliases) or "-",
        ", ".join(_format_param(p) for p in function.params) or "-",
    )


def _format_param(param: ParamInfo) -> str:
    if param.required:
        return f"{param.name} (required)"
    if param.choices:
        return f"{param.name}={param.default} [{'|'.join(param.choices)}]"
    return f"{param.name}={json.dumps(param.default) if param.type == 'tensor' else param.default}"


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text!r}")
    return value


def _serve(argv: list[str]) -> int:
    try:
        module = importlib.import_module("actgrad_server.cli")
    except ImportError as exc:
        print(
            f"error: 'actgrad serve' needs the server package ({exc}); {_SERVER_HINT}",
            file=sys.stderr,
        )
        return 2
    status = module.serve_main(argv)
    return int(status) if status is not None else 0


def _export_triton(argv: list[str]) -> int:
    try:
        module = importlib.import_module("actgrad_server.cli")
    except ImportError as exc:
        print(
            f"error: 'actgrad export-triton' needs the server package ({exc}); {_SERVER_HINT}",
            file=sys.stderr,
        )
        return 2
    return int(module.export_main(argv))
