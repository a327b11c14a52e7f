"""``python -m bench``: runs the phases, interleaved and repeated, and writes the reports.

Phases (``--phases``, all by default):

- ``latency``: for every size and operation, each subject's p50 and p99 of one call
  at a time. A tensor above the SDK's stream threshold travels as a stream of chunk
  requests (and its echo is a streaming echo of those same chunks). After a warm-up
  (not measured), every round runs every (size, operation, subject) cell with the
  subject order rotated by one each round, so that drift in the machine's load falls
  on all subjects alike. The servers' RSS high-water mark is read per size.
- ``throughput``: calls per second for small tensors at each concurrency level, the
  same rotation. The load is h2load (`bench.h2load`) sending the exact gRPC request
  over min(--channels, in flight) connections, every cell verified (no figure from
  failed calls), and the server's CPU time per call beside it.
- ``http``: actgrad's HTTP front end (OIP REST, JSON and the binary extension)
  against a bare echo on the same HTTP stack and, where ``.venv-mlserver`` exists,
  MLServer serving the same graph: p50 from a Python keep-alive client, throughput
  from h2load over HTTP/1.1 (`bench.http_phase`).
- ``memory``: for each ``--memory-sizes`` size and operation, a fresh server serves
  one call (streamed where the SDK streams it) and its peak RSS is read; then, for each
  ``--roundtrip-sizes`` size, a fresh actgrad server with the default limits
  serves one call whose every value is checked (the 1 GiB round trip).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import shlex
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from actgrad import ActgradError
from actgrad._requests import DEFAULT_CHUNK_BYTES, DEFAULT_STREAM_THRESHOLD_BYTES
from actgrad_server.config import DEVICES, Settings
from bench import h2load, http_phase, report
from bench import subjects as _subjects
from bench._common import (
    median,
    positive_float,
    positive_int,
    rotated,
    sample,
    to_us,
)
from bench._proc import REPO_ROOT
from bench.machine import load_average, machine_info
from bench.subjects import (
    COMPUTE_FLOOR,
    DEFAULT_SUBJECTS,
    SERVICE,
    SUBJECTS,
    THROUGHPUT_DEFAULTS,
    TRANSPORT_FLOOR,
    BenchError,
    GrpcLoad,
    Prepared,
    Setup,
    Subject,
    SubjectSpec,
    VariantError,
    parse_variant,
)
from bench.workloads import OPS, Reference, make_input, session_setup

__all__ = ["Config", "main", "parse_count", "run"]

_LOGGER = logging.getLogger("bench")

PHASES = ("latency", "throughput", "http", "memory")
_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
# 2: streaming (per-cell transport, 2-D inputs, the round trip, variants).
# 3: throughput from h2load (verified cells, server CPU per call), the http phase.
_SCHEMA = 3


def parse_count(text: str) -> int:
    """``"16"``, ``"64Ki"``, ``"16Mi"``, ``"1Gi"`` (binary multiples) -> a positive int."""
    try:
        return _subjects.parse_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _http_case(text: str) -> http_phase.HttpCase:
    try:
        return http_phase.parse_case(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _variant(text: str) -> str:
    try:
        parse_variant(text)
    except VariantError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def format_count(count: int) -> str:
    """The inverse of `parse_count` where exact: 65536 -> ``"64Ki"``."""
    for suffix, value in reversed(_SUFFIXES.items()):
        if count >= value and count % value == 0:
            return f"{count // value}{suffix}"
    return str(count)


def _list(parse: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse_list(text: str) -> tuple[Any, ...]:
        return tuple(parse(item) for item in text.split(",") if item.strip())

    return parse_list


def _choices(allowed: Sequence[str]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return check


@dataclass(frozen=True)
class Config:
    out: Path
    name: str
    phases: tuple[str, ...]
    sizes: tuple[int, ...]
    ops: tuple[str, ...]
    subjects: tuple[str, ...]
    repeats: int
    warmup: int
    cell_seconds: float
    min_calls: int
    max_calls: int
    concurrency: tuple[int, ...]
    channels: int
    throughput_elements: int
    throughput_seconds: float
    throughput_warmup: float
    memory_sizes: tuple[int, ...]
    roundtrip_sizes: tuple[int, ...]
    device: str
    max_message_bytes: int
    stream_threshold_bytes: int
    chunk_bytes: int
    max_concurrent_rpcs: int | None
    server_args: tuple[str, ...]
    seed: int
    note: str
    variants: tuple[str, ...] = ()  # the --variant texts, as given
    http_cases: tuple[http_phase.HttpCase, ...] = http_phase.DEFAULT_CASES
    http_concurrency: int = 64
    http_throughput_repeats: int = 3
    mlserver: bool = True  # the http phase's MLServer part, where its venv exists
    # Subjects measured in the throughput phase only (the default server, by default).
    throughput_only: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["out"] = str(self.out)
        values["http_cases"] = [case.name for case in self.http_cases]
        return values

    def registry(self) -> dict[str, SubjectSpec]:
        """The built-in subjects and this run's variants."""
        return {**SUBJECTS, **dict(parse_variant(text) for text in self.variants)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="actgrad against its transport floor (a bare gRPC echo) and its "
        "compute floor (onnxruntime in-process). Counts take Ki/Mi/Gi suffixes.",
    )
    add = parser.add_argument
    add("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="output folder")
    add("--name", default=None, help="file stem of the outputs (default: bench, or memory)")
    add(
        "--phases",
        type=_list(_choices(PHASES)),
        default=PHASES,
        help=f"comma-separated phases to run (default: {','.join(PHASES)})",
    )
    add("--memory", action="store_true", help="shorthand for --phases memory --name memory")
    add(
        "--render",
        type=Path,
        metavar="JSON",
        default=None,
        help="run nothing: rewrite the Markdown and PNG of an earlier run's JSON file",
    )
    add(
        "--sizes",
        type=_list(parse_count),
        default=(16, 1 << 10, 1 << 16, 1 << 20, 1 << 24),
        help="float32 element counts for latency (default: 16,1Ki,64Ki,1Mi,16Mi)",
    )
    add("--ops", type=_list(_choices(tuple(OPS))), default=tuple(OPS), help="operations")
    add(
        "--subjects",
        type=_list(str),
        default=None,
        help=f"what to measure, of {', '.join(SUBJECTS)} and the --variant names "
        f"(default: {','.join(DEFAULT_SUBJECTS)}, then every variant; the throughput "
        f"phase also runs {','.join(THROUGHPUT_DEFAULTS) or 'nothing else'})",
    )
    add(
        "--variant",
        action="append",
        type=_variant,
        default=[],
        metavar="NAME:BASE:TOKENS",
        help="one more subject, repeatable: BASE actgrad or echo; TOKENS are `actgrad "
        "serve` flags and client.KEY=VALUE client options, e.g. "
        "'ce64k:actgrad:--chunk-elements=64Ki' or 'cb256k:actgrad:client.chunk_bytes=256Ki' "
        "(flags take plain numbers, client options Ki/Mi suffixes too)",
    )
    add("--repeats", type=positive_int, default=5, help="interleaved rounds (default: 5)")
    add("--warmup", type=positive_int, default=20, help="untimed calls per cell (default: 20)")
    add(
        "--cell-seconds",
        type=positive_float,
        default=0.3,
        help="target time of one cell in one round; sets its call count (default: 0.3)",
    )
    add("--min-calls", type=positive_int, default=5, help="calls per cell per round, at least")
    add("--max-calls", type=positive_int, default=300, help="calls per cell per round, at most")
    add(
        "--concurrency",
        type=_list(positive_int),
        default=(1, 8, 64),
        help="throughput concurrency levels (default: 1,8,64)",
    )
    add(
        "--channels",
        type=positive_int,
        default=8,
        help="throughput: connections the calls in flight are spread over (default: 8; "
        "each is its own TCP connection, so SO_REUSEPORT can spread them over --workers)",
    )
    add("--throughput-elements", type=parse_count, default=16, help="tensor size for throughput")
    add(
        "--http-cases",
        type=_list(_http_case),
        default=http_phase.DEFAULT_CASES,
        help="the http phase's OIP infer calls, ENCODING:ELEMENTS with ENCODING json or "
        "binary (default: json:16,json:64Ki,binary:64Ki,binary:1Mi)",
    )
    add(
        "--http-concurrency",
        type=positive_int,
        default=64,
        help="the http phase's calls in flight, one HTTP/1.1 connection each (default: 64)",
    )
    add(
        "--http-throughput-repeats",
        type=positive_int,
        default=3,
        help="the http phase's throughput rounds (default: 3; MLServer's slowest cell "
        "takes about 30 s a round)",
    )
    add(
        "--no-mlserver",
        dest="mlserver",
        action="store_false",
        help="leave MLServer out of the http phase (by default it runs where "
        ".venv-mlserver exists: make bench-mlserver-venv)",
    )
    add("--throughput-seconds", type=positive_float, default=2.0, help="measured time per cell")
    add("--throughput-warmup", type=positive_float, default=0.5, help="unmeasured lead-in")
    add(
        "--memory-sizes",
        type=_list(parse_count),
        default=(1 << 24, 1 << 26),
        help="element counts for the memory phase (default: 16Mi,64Mi = 64 and 256 MiB)",
    )
    add(
        "--roundtrip-sizes",
        type=_list(parse_count),
        default=(1 << 28,),
        help="element counts of the memory phase's checked round trips on a default "
        "server (default: 256Mi = 1 GiB; empty to skip)",
    )
    add("--device", choices=DEVICES, default="cpu", help="the server's --device (default: cpu)")
    add(
        "--max-message-bytes",
        type=parse_count,
        default=Settings().max_message_bytes,
        help="gRPC message limit of every server and client (default: actgrad serve's, "
        f"{Settings().max_message_bytes >> 20} MiB)",
    )
    add(
        "--stream-threshold-bytes",
        type=parse_count,
        default=DEFAULT_STREAM_THRESHOLD_BYTES,
        help="the SDK's stream_threshold_bytes, for actgrad and the echo alike (default: "
        f"the SDK's, {DEFAULT_STREAM_THRESHOLD_BYTES >> 20} MiB; the SDK caps it at half "
        "the message limit)",
    )
    add(
        "--chunk-bytes",
        type=parse_count,
        default=DEFAULT_CHUNK_BYTES,
        help=f"the SDK's chunk_bytes (default: the SDK's, {DEFAULT_CHUNK_BYTES >> 20} MiB)",
    )
    add(
        "--max-concurrent-rpcs",
        type=positive_int,
        default=None,
        help="every server's concurrency cap (default: actgrad serve's, "
        f"{Settings().max_concurrent_rpcs})",
    )
    add(
        "--server-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra `actgrad serve` flag, repeatable (e.g. --server-arg=--no-access-log)",
    )
    add("--seed", type=int, default=0, help="seed of the input arrays")
    add("--note", default="", help="free text for the report (e.g. the machine was shared)")
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> Config:
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = [parse_variant(text)[0] for text in args.variant]
    if len(set(variants)) != len(variants):
        parser.error("--variant names must differ")
    throughput_only: tuple[str, ...] = ()
    if args.subjects is None:
        subjects = tuple(dict.fromkeys([*DEFAULT_SUBJECTS, *variants]))
        # Issue 9's throughput target is the default server's (`--workers 0`, one
        # process per CPU), while `actgrad` is one process like the echo: both run.
        throughput_only = tuple(s for s in THROUGHPUT_DEFAULTS if s not in subjects)
    else:
        subjects = tuple(dict.fromkeys(args.subjects))
    unknown = [name for name in subjects if name not in SUBJECTS and name not in variants]
    if unknown:
        parser.error(f"unknown subjects: {', '.join(unknown)}")
    phases = ("memory",) if args.memory else tuple(dict.fromkeys(args.phases))
    name = args.name or ("memory" if phases == ("memory",) else "bench")
    if args.min_calls > args.max_calls:
        raise SystemExit("python -m bench: --min-calls must not exceed --max-calls")
    return Config(
        out=args.out,
        name=name,
        phases=phases,
        sizes=tuple(sorted(set(args.sizes))),
        ops=tuple(dict.fromkeys(args.ops)),
        subjects=subjects,
        repeats=args.repeats,
        warmup=args.warmup,
        cell_seconds=args.cell_seconds,
        min_calls=args.min_calls,
        max_calls=args.max_calls,
        concurrency=tuple(dict.fromkeys(args.concurrency)),
        channels=args.channels,
        throughput_elements=args.throughput_elements,
        throughput_seconds=args.throughput_seconds,
        throughput_warmup=args.throughput_warmup,
        memory_sizes=tuple(sorted(set(args.memory_sizes))),
        roundtrip_sizes=tuple(sorted(set(args.roundtrip_sizes))),
        device=args.device,
        max_message_bytes=args.max_message_bytes,
        stream_threshold_bytes=args.stream_threshold_bytes,
        chunk_bytes=args.chunk_bytes,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        server_args=tuple(args.server_arg),
        seed=args.seed,
        note=args.note,
        variants=tuple(args.variant),
        throughput_only=throughput_only if "throughput" in phases else (),
        http_cases=tuple(dict.fromkeys(args.http_cases)),
        http_concurrency=args.http_concurrency,
        http_throughput_repeats=args.http_throughput_repeats,
        mlserver=args.mlserver,
    )


def _unsent_reason(size: int, limit: int) -> str:
    return (
        f"needs streaming: the request ({size} bytes) is over the gRPC message limit "
        f"({limit} bytes = {report.format_bytes(limit)}) and the SDK cannot split it"
    )


def _transport(subject: Subject, op: Any, x: np.ndarray[Any, Any]) -> dict[str, Any]:
    sent = subject.transport(op, x)
    return {"mode": "in-process"} if sent is None else sent.describe()


# -- latency -------------------------------------------------------------------------


def _warm_up(prepared: Prepared, calls: int, budget_s: float) -> list[int]:
    """Runs untimed calls (checking the first answer); returns the durations after it."""
    prepared.check(prepared.call())
    durations: list[int] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(max(calls - 1, 1)):
        start = time.perf_counter_ns()
        prepared.call()
        durations.append(time.perf_counter_ns() - start)
        if time.perf_counter() > deadline and len(durations) >= 2:
            break
    return durations


def _latency_phase(
    config: Config, subjects: Sequence[Subject], setup: Setup
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ops = [OPS[name] for name in config.ops]
    inputs = {n: make_input(n, config.seed) for n in config.sizes}
    cells: dict[tuple[str, str, int], Prepared] = {}
    skipped: dict[tuple[str, str, int], str] = {}
    transports: dict[tuple[str, str, int], dict[str, Any]] = {}
    references: dict[tuple[str, int], Reference] = {}
    for n, x in inputs.items():
        for op in ops:
            references[op.name, n] = Reference(op, x, setup.sessions)
            for subject in subjects:
                key = (subject.name, op.name, n)
                transports[key] = sent = _transport(subject, op, x)
                if sent["mode"] == "unary" and sent["wire_bytes"] > setup.max_message_bytes:
                    skipped[key] = _unsent_reason(sent["wire_bytes"], setup.max_message_bytes)
                else:
                    cells[key] = subject.prepare(op, x, references[op.name, n])

    _LOGGER.info("latency: warm-up and answer checks")
    calls: dict[tuple[str, int], int] = {}
    for n in config.sizes:
        for op in ops:
            slowest = 1.0
            for subject in subjects:
                prepared = cells.get((subject.name, op.name, n))
                if prepared is not None:
                    durations = _warm_up(prepared, config.warmup, config.cell_seconds)
                    slowest = max(slowest, statistics.median(durations))
            # One call count per (operation, size) for all subjects: equal sample sizes.
            wanted = int(config.cell_seconds * 1e9 / slowest)
            calls[op.name, n] = min(max(wanted, config.min_calls), config.max_calls)

    samples: dict[tuple[str, str, int], list[list[int]]] = defaultdict(list)
    servers = [s for s in subjects if s.process is not None]
    peak_resets = all(s.process.reset_peak() for s in servers if s.process is not None)
    memory: dict[tuple[str, int], dict[str, int]] = {}
    for round_index in range(config.repeats):
        order = rotated(subjects, round_index)
        for n in config.sizes:
            before = {}
            for s in servers:
                assert s.process is not None
                if peak_resets:
                    s.process.reset_peak()
                before[s.name] = s.process.rss_bytes()
            for op in ops:
                for subject in order:
                    key = (subject.name, op.name, n)
                    if key in cells:
                        samples[key].append(sample(cells[key].call, calls[op.name, n]))
            for s in servers:
                assert s.process is not None
                peak = s.process.peak_rss_bytes()
                seen = memory.setdefault((s.name, n), {"peak_rss_bytes": 0, "growth_bytes": 0})
                seen["peak_rss_bytes"] = max(seen["peak_rss_bytes"], peak)
                seen["growth_bytes"] = max(seen["growth_bytes"], peak - before[s.name])
        _LOGGER.info("latency: round %d/%d done", round_index + 1, config.repeats)

    rows: list[dict[str, Any]] = []
    for n in config.sizes:
        for op in ops:
            for subject in subjects:
                key = (subject.name, op.name, n)
                row: dict[str, Any] = {
                    "op": op.name,
                    "label": op.label,
                    "elements": n,
                    "shape": list(inputs[n].shape),
                    "tensor_bytes": int(inputs[n].nbytes),
                    "subject": subject.name,
                    "role": subject.role,
                    # unary or streamed, in how many messages: per subject, since a
                    # variant may chunk differently.
                    "transport": transports[key],
                }
                if key in skipped:
                    row["skipped"] = skipped[key]
                else:
                    rounds = samples[key]
                    flat = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds])
                    p50, p99 = np.percentile(flat, [50, 99])
                    row.update(
                        samples=int(flat.size),
                        calls_per_round=calls[op.name, n],
                        p50_us=to_us(p50),
                        p99_us=to_us(p99),
                        mean_us=to_us(float(flat.mean())),
                        min_us=to_us(float(flat.min())),
                        max_us=to_us(float(flat.max())),
                        round_p50_us=[to_us(float(np.median(r))) for r in rounds],
                    )
                rows.append(row)

    memory_rows = [
        {
            "subject": name,
            "elements": n,
            "tensor_bytes": int(inputs[n].nbytes),
            **values,
            "peak_reset_per_size": peak_resets,
        }
        for (name, n), values in sorted(memory.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
    return rows, memory_rows


# -- throughput ----------------------------------------------------------------------


def _status_name(exc: BaseException) -> str:
    code = exc.code if isinstance(exc, ActgradError) else getattr(exc, "code", None)
    if callable(code):
        code = code()
    return code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__


def _throughput_cell(
    subject: Subject, load: GrpcLoad, concurrency: int, config: Config
) -> dict[str, Any]:
    """`concurrency` calls kept in flight by h2load over a few connections, verified.

    The calls go over min(channels, concurrency) connections, concurrency / connections
    streams each: one connection would pin every call to one process of a server
    running --workers, as the kernel spreads connections, not calls, over the
    processes sharing the port.

    h2load, not a Python client: 64 calls in flight from Python on a small machine
    cost the client more CPU than the server's work on 16 elements (issue 21: 185-280
    us a call), so the figure described the client. The server's own CPU time per call
    is read from its CPU clock around the measured run, a measure that does not depend
    on the client at all.
    """
    server = subject.process
    # The CPU of each server process around the measured run: how the kernel's
    # choice of a worker per connection split the load (`cpu_split`).
    snapshots: list[dict[int, float]] = []

    def server_cpu() -> float:
        if server is None:
            return math.nan
        snapshots.append(server.cpu_seconds_by_process())
        return sum(snapshots[-1].values())

    connections = min(config.channels, concurrency)
    h2 = h2load.grpc_load(
        load.target,
        load.method,
        load.message,
        connections=connections,
        streams=-(-concurrency // connections),
    )
    measured = h2load.measure(
        h2,
        sample=h2load.Sample(load.sample),
        warmup_s=config.throughput_warmup,
        seconds=config.throughput_seconds,
        server_cpu=server_cpu,
        ok_calls=load.ok_calls,
    )
    if not measured["verified"]:
        _LOGGER.error(
            "throughput: %s at %d in flight NOT VERIFIED, no figure: %s",
            subject.name,
            concurrency,
            "; ".join(measured["problems"]),
        )
    # measure() reads the CPU last just before and just after the measured run.
    measured["cpu_split"] = cpu_split(snapshots[-2], snapshots[-1]) if len(snapshots) > 1 else []
    measured["load"] = h2.describe()
    return measured


def cpu_split(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """Each server process's share of the CPU the server used between two snapshots,
    largest first, for processes with at least 2% of it (a supervisor has less)."""
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    total = sum(used.values())
    if total <= 0:
        return []
    return sorted((round(u / total, 3) for u in used.values() if u >= 0.02 * total), reverse=True)


def _throughput_phase(
    config: Config, subjects: Sequence[Subject], setup: Setup
) -> list[dict[str, Any]]:
    loaders = [s for s in subjects if s.supports_throughput]
    op = OPS["activate"]
    x = make_input(config.throughput_elements, config.seed)
    reference = Reference(op, x, setup.sessions)
    loads = {s.name: s.grpc_load(op, x, reference) for s in loaders}
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for round_index in range(config.repeats):
        for concurrency in config.concurrency:
            for subject in rotated(loaders, round_index):
                measured = _throughput_cell(subject, loads[subject.name], concurrency, config)
                rounds[subject.name, concurrency].append(measured)
        _LOGGER.info("throughput: round %d/%d done", round_index + 1, config.repeats)
    rows = []
    for concurrency in config.concurrency:
        for subject in loaders:
            cells = rounds[subject.name, concurrency]
            errors: Counter[str] = Counter()
            for cell in cells:
                errors.update(cell["errors"])
            # A figure only where every round's calls were all verified.
            verified = all(c["verified"] for c in cells)
            rows.append(
                {
                    "subject": subject.name,
                    "role": subject.role,
                    "elements": config.throughput_elements,
                    "concurrency": concurrency,
                    "load": cells[0]["load"],
                    "verified": verified,
                    "problems": [p for c in cells for p in c["problems"]],
                    "server_counted": all(c["server_counted"] for c in cells),
                    "calls_per_s": median([c["calls_per_s"] for c in cells]) if verified else None,
                    "round_calls_per_s": [
                        None if c["calls_per_s"] is None else round(c["calls_per_s"], 1)
                        for c in cells
                    ],
                    "calls": [c["calls"] for c in cells],
                    "server_cpu_us_per_call": (
                        median([c["server_cpu_us_per_call"] for c in cells]) if verified else None
                    ),
                    "server_cpu_cores": median([c["server_cpu_cores"] for c in cells]),
                    "client_cpu_cores": median([c["client_cpu_cores"] for c in cells]),
                    "round_cpu_split": [c["cpu_split"] for c in cells],
                    "errors": dict(errors),
                }
            )
    return rows


# -- memory --------------------------------------------------------------------------


def _serve_one(
    spec: SubjectSpec, setup: Setup, op: Any, x: np.ndarray[Any, Any], reference: Reference
) -> dict[str, Any]:
    """A fresh server serves one checked call; its idle and peak RSS and the time."""
    subject = spec.start(setup)
    try:
        process = subject.process
        assert process is not None
        sent = _transport(subject, op, x)
        if sent["mode"] == "unary" and sent["wire_bytes"] > setup.max_message_bytes:
            return {
                "transport": sent,
                "status": "needs streaming",
                "reason": _unsent_reason(sent["wire_bytes"], setup.max_message_bytes),
            }
        prepared = subject.prepare(op, x, reference)
        gc.collect()
        idle = process.rss_bytes()
        reset = process.reset_peak()
        start = time.perf_counter()
        try:
            result = prepared.call()
        except (grpc.RpcError, ActgradError) as exc:
            return {"transport": sent, "status": "failed", "reason": f"{_status_name(exc)}"}
        seconds = time.perf_counter() - start
        peak = process.peak_rss_bytes()
        try:
            prepared.check(result)
        except BenchError as exc:
            return {"transport": sent, "status": "wrong result", "reason": str(exc)}
        del result
    finally:
        subject.close()
    return {
        "transport": sent,
        "status": "measured",
        "seconds": round(seconds, 3),
        "idle_rss_bytes": idle,
        "peak_rss_bytes": peak,
        "peak_includes_start_up": not reset,
    }


def _memory_phase(config: Config, setup: Setup) -> list[dict[str, Any]]:
    registry = config.registry()
    rows: list[dict[str, Any]] = []
    for n, op in ((n, OPS[name]) for n in config.memory_sizes for name in config.ops):
        x = make_input(n, config.seed)
        reference = Reference(op, x, setup.sessions)
        for name in config.subjects:
            spec = registry[name]
            if spec.role == COMPUTE_FLOOR:
                continue
            row: dict[str, Any] = {
                "subject": name,
                "role": spec.role,
                "op": op.name,
                "label": op.label,
                "elements": n,
                "shape": list(x.shape),
                "tensor_bytes": int(x.nbytes),
                **_serve_one(spec, setup, op, x, reference),
            }
            if row["status"] == "measured":
                peak, idle = row["peak_rss_bytes"], row["idle_rss_bytes"]
                row["peak_over_tensor"] = round(peak / x.nbytes, 3)
                row["growth_over_tensor"] = round((peak - idle) / x.nbytes, 3)
                _LOGGER.info(
                    "memory: %s %s, %s elements (%s): peak RSS %.1f MiB = %.2fx the tensor",
                    name,
                    op.label,
                    format_count(n),
                    row["transport"]["mode"],
                    peak / 2**20,
                    row["peak_over_tensor"],
                )
            rows.append(row)
        del x, reference
    return rows


def _roundtrip_phase(config: Config, setup: Setup) -> list[dict[str, Any]]:
    """Checked round trips of large tensors through a default actgrad server.

    The server keeps `actgrad serve`'s defaults (message limit included) whatever
    the run's flags; the client is the SDK with its defaults.
    """
    defaults = Settings()
    default_setup = dataclasses.replace(
        setup,
        max_message_bytes=defaults.max_message_bytes,
        stream_threshold_bytes=DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes=DEFAULT_CHUNK_BYTES,
        max_concurrent_rpcs=defaults.max_concurrent_rpcs,
        actgrad_flags=(),
    )
    op = OPS["activate"]
    rows: list[dict[str, Any]] = []
    for n in config.roundtrip_sizes:
        x = make_input(n, config.seed)
        reference = Reference(op, x, setup.sessions)
        row: dict[str, Any] = {
            "subject": "actgrad",
            "op": op.name,
            "elements": n,
            "shape": list(x.shape),
            "tensor_bytes": int(x.nbytes),
            "max_message_bytes": default_setup.max_message_bytes,
            **_serve_one(SUBJECTS["actgrad"], default_setup, op, x, reference),
        }
        if row["status"] == "measured":
            row["status"] = "correct"  # _serve_one checked every value
            row["peak_over_tensor"] = round(row["peak_rss_bytes"] / x.nbytes, 3)
        _LOGGER.info(
            "round trip: %s elements (%s): %s",
            format_count(n),
            report.format_bytes(x.nbytes),
            row["status"],
        )
        rows.append(row)
        del x, reference
    return rows


# -- ratios and the run --------------------------------------------------------------


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every service subject over every floor: latency p50/p99, throughput."""
    latency: list[dict[str, Any]] = []
    measured = {
        (r["subject"], r["op"], r["elements"]): r
        for r in results.get("latency", [])
        if "p50_us" in r
    }
    roles = {s["name"]: s["role"] for s in results.get("subjects", [])}
    services = [name for name, role in roles.items() if role == SERVICE]
    floors = [name for name, role in roles.items() if role in (TRANSPORT_FLOOR, COMPUTE_FLOOR)]
    for (name, op, n), row in measured.items():
        if name not in services:
            continue
        for floor in floors:
            base = measured.get((floor, op, n))
            if base is None:
                continue
            latency.append(
                {
                    "op": op,
                    "elements": n,
                    "subject": name,
                    "floor": floor,
                    "floor_role": roles[floor],
                    "p50_ratio": round(row["p50_us"] / base["p50_us"], 3),
                    "p99_ratio": round(row["p99_us"] / base["p99_us"], 3),
                }
            )
    throughput: list[dict[str, Any]] = []
    by_key = {(r["subject"], r["concurrency"]): r for r in results.get("throughput", [])}
    for (name, concurrency), row in by_key.items():
        if name not in services:
            continue
        for floor in floors:
            base = by_key.get((floor, concurrency))
            if base is None or not base["calls_per_s"] or row["calls_per_s"] is None:
                continue
            cpu, base_cpu = row.get("server_cpu_us_per_call"), base.get("server_cpu_us_per_call")
            throughput.append(
                {
                    "concurrency": concurrency,
                    "subject": name,
                    "floor": floor,
                    "calls_per_s_ratio": round(row["calls_per_s"] / base["calls_per_s"], 3),
                    # Server CPU time per call over the echo's, in the same run.
                    "server_cpu_ratio": round(cpu / base_cpu, 3) if cpu and base_cpu else None,
                }
            )
    ratios: dict[str, Any] = {"latency": latency, "throughput": throughput}
    if "http" in results:
        ratios["http"] = http_phase.ratios(results["http"], results.get("throughput", []))
    return ratios


def run(config: Config) -> dict[str, Any]:
    """Runs the configured phases and returns the results (docs/performance.md)."""
    machine = machine_info()
    registry = config.registry()
    # The servers run with `actgrad serve`'s defaults except where flags say otherwise.
    defaults = Settings()
    setup = Setup(
        device=config.device,
        max_message_bytes=config.max_message_bytes,
        stream_threshold_bytes=config.stream_threshold_bytes,
        chunk_bytes=config.chunk_bytes,
        threads=defaults.threads,
        max_concurrent_rpcs=config.max_concurrent_rpcs or defaults.max_concurrent_rpcs,
        intra_op_threads=defaults.intra_op_threads,
        actgrad_flags=config.server_args,
        timeout=600.0,
        start_timeout=180.0,
        sessions=session_setup(device=config.device, intra_op_threads=defaults.intra_op_threads),
    )
    results: dict[str, Any] = {
        "schema": _SCHEMA,
        "name": config.name,
        "note": config.note,
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "machine": machine,
        "config": config.as_json(),
        "server_settings": {
            "device": setup.device,
            "max_message_bytes": setup.max_message_bytes,
            "sdk_stream_threshold_bytes": setup.stream_threshold_bytes,
            "sdk_chunk_bytes": setup.chunk_bytes,
            "input_shape": "(elements / 1024, 1024), or (1, elements) below 1 Ki",
            "threads": setup.threads,
            "max_concurrent_rpcs": setup.max_concurrent_rpcs,
            "intra_op_threads": setup.intra_op_threads,
            "actgrad_extra_flags": list(setup.actgrad_flags),
            # Everything else is `actgrad serve`'s default, e.g. its per-call access log.
            "actgrad_defaults": {
                k: v for k, v in asdict(defaults).items() if isinstance(v, bool | int | float | str)
            },
        },
    }
    if "throughput" in config.phases or "http" in config.phases:
        h2load.h2load_path()  # H2loadMissing, saying how to install it, before any server
        results["h2load"] = h2load.h2load_version()
    if {"latency", "throughput", "http"} & set(config.phases):
        subjects: list[Subject] = []
        try:
            names = [*config.subjects, *config.throughput_only]
            # The http phase calls the one-process actgrad server's HTTP port.
            extra = ["actgrad"] if "http" in config.phases and "actgrad" not in names else []
            for name in (*names, *extra):
                subjects.append(registry[name].start(setup))
            results["subjects"] = [s.describe() for s in subjects if s.name not in extra]
            if "latency" in config.phases:
                results["latency"], results["server_memory"] = _latency_phase(
                    config,
                    [s for s in subjects if s.name not in (*config.throughput_only, *extra)],
                    setup,
                )
            if "throughput" in config.phases:
                results["throughput"] = _throughput_phase(
                    config, [s for s in subjects if s.name not in extra], setup
                )
            if "http" in config.phases:
                actgrad = next(s for s in subjects if s.name == "actgrad")
                assert actgrad.process is not None
                results["http"] = http_phase.run_phase(
                    http_phase.PhaseConfig(
                        cases=config.http_cases,
                        repeats=config.repeats,
                        warmup=config.warmup,
                        cell_seconds=config.cell_seconds,
                        min_calls=config.min_calls,
                        max_calls=config.max_calls,
                        concurrency=config.http_concurrency,
                        throughput_repeats=config.http_throughput_repeats,
                        throughput_seconds=config.throughput_seconds,
                        throughput_warmup=config.throughput_warmup,
                        seed=config.seed,
                        timeout=setup.timeout,
                        start_timeout=setup.start_timeout,
                        mlserver=config.mlserver,
                    ),
                    actgrad.process,
                    setup.sessions,
                )
        finally:
            for subject in subjects:
                subject.close()
    else:
        results["subjects"] = [
            {"name": name, "role": registry[name].role} for name in config.subjects
        ]
    if "memory" in config.phases:
        results["memory"] = _memory_phase(config, setup)
        results["roundtrip"] = _roundtrip_phase(config, setup)
    results["ratios"] = compute_ratios(results)
    machine["load_average_at_end"] = load_average()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        # With today's ratios (an older run gains e.g. server CPU per call over the echo's).
        results["ratios"] = compute_ratios(results)
        for path in report.write_all(results, args.render.parent, args.render.stem):
            _LOGGER.info("wrote %s", path)
        return 0
    config = config_from_args(argv)
    try:
        results = run(config)
    except h2load.H2loadMissing as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    paths = report.write_all(results, config.out, config.name)
    for path in paths:
        _LOGGER.info("wrote %s", path)
    unverified = unverified_cells(results)
    if unverified:
        _LOGGER.error(
            "%d throughput cells were not verified and have no figure: %s",
            len(unverified),
            "; ".join(unverified),
        )
        return 1
    if results.get("http", {}).get("mlserver_skipped"):
        _LOGGER.warning("%s", results["http"]["mlserver_skipped"].upper())
    return 0


def unverified_cells(results: dict[str, Any]) -> list[str]:
    """The throughput cells (gRPC and HTTP) whose calls could not all be verified."""
    bad = [
        f"{r['subject']} at {r['concurrency']}: {r['problems'][0]}"
        for r in results.get("throughput", [])
        if not r.get("verified", True)
    ]
    bad += [
        f"{r['subject']} {r['case']}: {r['problems'][0]}"
        for r in results.get("http", {}).get("throughput", [])
        if not r["verified"]
    ]
    return bad
