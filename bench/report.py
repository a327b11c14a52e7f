"""Writes a run's results as JSON, a Markdown report and a PNG chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported

import matplotlib.pyplot as plt

__all__ = ["format_bytes", "format_time", "markdown", "write_all"]

_MIB = 1 << 20
_NONE = "-"


def format_time(us: float | None) -> str:
    """Microseconds in the unit that reads best: ``"85.2 µs"``, ``"3.41 ms"``."""
    if us is None:
        return _NONE
    if us < 100:
        return f"{us:.1f} µs"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.3g} ms"
    return f"{us / 1_000_000:.3g} s"


def format_bytes(n: int | None) -> str:
    if n is None:
        return _NONE
    if n >= _MIB:
        return f"{n / _MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def format_elements(n: int) -> str:
    for suffix, value in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= value and n % value == 0:
            return f"{n // value} {suffix}"
    return str(n)


def _ratio(value: float | None) -> str:
    return _NONE if value is None else f"{value:.2f}x"


def format_transport(transport: dict[str, Any] | None) -> str:
    """``"unary"``, ``"streamed, 32 x 2.0 MiB"``, ``"in-process"``."""
    if not transport:
        return _NONE
    if transport["mode"] != "streamed":
        return str(transport["mode"])
    return f"streamed, {transport['messages']} x {format_bytes(transport['largest_message_bytes'])}"


def _transport_cell(rows: Sequence[dict[str, Any]]) -> str:
    """One cell for a row of the table: how the subjects' calls travelled."""
    seen = {
        r["subject"]: format_transport(r.get("transport"))
        for r in rows
        if r.get("transport", {}).get("mode") not in (None, "in-process")
    }
    kinds = set(seen.values())
    if len(kinds) <= 1:
        return kinds.pop() if kinds else _NONE
    return "; ".join(f"{name}: {text}" for name, text in seen.items())


def _subjects(results: dict[str, Any], role: str | None = None) -> list[str]:
    return [s["name"] for s in results.get("subjects", []) if role is None or s["role"] == role]


def _access_log(settings: dict[str, Any]) -> str:
    # The server's per-call access log is part of what a default server costs.
    default = settings.get("actgrad_defaults", {}).get("access_log")
    if default is None:
        return ""
    flags = settings.get("actgrad_extra_flags", [])
    on = "--access-log" in flags or (default and "--no-access-log" not in flags)
    return f"; actgrad access log {'on' if on else 'off'}"


def _throughput_intro(results: dict[str, Any]) -> str:
    common = (
        "Server CPU/call is the server's user+system time per call over its whole "
        "process tree. `actgrad` is one process, like the echo; `actgrad-workers` is "
        "`actgrad serve`'s default, one process per usable CPU."
    )
    if results.get("schema", 0) < 3:  # runs before 2026-12-07
        return (
            "Calls per second with that many calls in flight from one asyncio loop (a "
            "Python client) over min(--channels, concurrency) connections, median over "
            "rounds; client CPU near 1.0 core means the load generator was the limit. " + common
        )
    return (
        "Calls per second of Activate(sigmoid) on 16 elements with that many calls in "
        "flight, sent by h2load (the exact gRPC request, h2c) over min(--channels, "
        "concurrency) connections, median over rounds. Every cell is verified: every "
        "call answered 2xx with the DATA of the answer a real client checked, and "
        "actgrad's own count of OK calls; a cell that is not has no figure. "
        + common
        + " CPU/call ratios are over the echo's in the same run; client CPU is h2load's."
    )


def _load_generator(results: dict[str, Any]) -> str:
    if results.get("h2load"):
        return str(results["h2load"])
    if results.get("schema", 0) < 3 and results.get("throughput"):
        return "a Python asyncio client (runs before 2026-12-07's schema 3)"
    return "none (no throughput phase)"


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    v = m["versions"]
    cpus = f"{m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable"
    cpus += f", cgroup cpu.max {m['cgroup_cpu_max']})" if m.get("cgroup_cpu_max") else ")"
    s = results["server_settings"]
    cfg = results["config"]
    lines = [
        f"- Date (UTC): {m['date']}",
        f"- CPU: {m['cpu_model']}, {cpus}, {format_bytes(m['memory_bytes'])} memory",
        f"- Platform: {m['platform']}, {m['python']}",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in v.items() if version),
        f"- Load average (1/5/15 min) at start {m['load_average_at_start']}, "
        f"at end {m.get('load_average_at_end')}",
        f"- Servers: device {s['device']}, {s['threads']} RPC threads, "
        f"max {s['max_concurrent_rpcs']} concurrent RPCs, intra-op threads "
        f"{s['intra_op_threads'] or 'onnxruntime default'}, message limit "
        f"{format_bytes(s['max_message_bytes'])}"
        + (
            f", extra actgrad flags `{' '.join(s['actgrad_extra_flags'])}`"
            if s.get("actgrad_extra_flags")
            else ""
        )
        + _access_log(s),
        f"- Load generator for throughput: {_load_generator(results)}",
        f"- Run: {cfg['repeats']} interleaved rounds, warm-up {cfg['warmup']} calls per cell, "
        f"{cfg['min_calls']}-{cfg['max_calls']} calls per cell per round "
        f"(~{cfg['cell_seconds']} s); command `{results['command']}`",
    ]
    if results.get("note"):
        lines.append(f"- Note: {results['note']}")
    return lines


def _latency_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("latency", [])
    if not rows:
        return []
    # Only those measured here (some run in the throughput phase only).
    measured = {r["subject"] for r in rows}
    subjects = [name for name in _subjects(results) if name in measured]
    services = [name for name in _subjects(results, "service") if name in measured]
    ratios = {
        (r["subject"], r["floor"], r["op"], r["elements"]): r for r in results["ratios"]["latency"]
    }
    floors = sorted({r["floor"] for r in results["ratios"]["latency"]}, key=subjects.index)
    by_key = {(r["subject"], r["op"], r["elements"]): r for r in rows}
    header = ["operation", "elements", "transport"]
    for name in subjects:
        header += [f"{name} p50", f"{name} p99"]
    for service in services:
        for floor in floors:
            header += [f"{service}/{floor} p50", f"{service}/{floor} p99"]
    header.append("samples")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ops = list(dict.fromkeys(r["op"] for r in rows))
    sizes = sorted({r["elements"] for r in rows})
    skipped_notes: dict[str, int] = {}
    for op in ops:
        for n in sizes:
            first = by_key.get((subjects[0], op, n))
            if first is None:
                continue
            cells = [
                first["label"],
                format_elements(n),
                _transport_cell(
                    [by_key[name, op, n] for name in subjects if (name, op, n) in by_key]
                ),
            ]
            samples = None
            for name in subjects:
                row = by_key.get((name, op, n), {})
                if "skipped" in row:
                    mark = skipped_notes.setdefault(row["skipped"], len(skipped_notes) + 1)
                    cells += [f"needs streaming [{mark}]", _NONE]
                else:
                    cells += [format_time(row.get("p50_us")), format_time(row.get("p99_us"))]
                    samples = samples or row.get("samples")
            for service in services:
                for floor in floors:
                    r = ratios.get((service, floor, op, n))
                    cells += [
                        _ratio(r["p50_ratio"] if r else None),
                        _ratio(r["p99_ratio"] if r else None),
                    ]
            cells.append(str(samples or _NONE))
            lines.append("| " + " | ".join(cells) + " |")
    for reason, mark in skipped_notes.items():
        lines += ["", f"[{mark}] {reason}."]
    return lines


def _throughput_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("throughput", [])
    if not rows:
        return []
    names = list(dict.fromkeys(r["subject"] for r in rows))
    ratios = {
        (r["subject"], r["floor"], r["concurrency"]): r for r in results["ratios"]["throughput"]
    }
    pairs = sorted({(r["subject"], r["floor"]) for r in results["ratios"]["throughput"]})
    by_key = {(r["subject"], r["concurrency"]): r for r in rows}
    header = ["concurrency"]
    header += [f"{n} calls/s" for n in names]
    header += [f"{s}/{f}" for s, f in pairs]
    header += [f"{n} server CPU/call" for n in names]
    header += [f"{s}/{f} CPU/call" for s, f in pairs]
    header += [f"{n} client CPU (cores)" for n in names]
    header.append("errors")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for concurrency in sorted({r["concurrency"] for r in rows}):
        got = [by_key[n, concurrency] for n in names]
        cells = [str(concurrency)]
        cells += [_calls_cell(r) for r in got]
        for s, f in pairs:
            r = ratios.get((s, f, concurrency))
            cells.append(_ratio(r["calls_per_s_ratio"] if r else None))
        cells += [format_time(r["server_cpu_us_per_call"]) for r in got]
        for s, f in pairs:
            r = ratios.get((s, f, concurrency))
            cells.append(_ratio(r.get("server_cpu_ratio") if r else None))
        cells += [
            f"{r['client_cpu_cores']:.2f}" if r["client_cpu_cores"] is not None else _NONE
            for r in got
        ]
        errors = [f"{r['subject']}: {r['errors']}" for r in got if r["errors"]]
        cells.append("; ".join(errors) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _unverified_notes(rows)
    splits = [
        f"{r['subject']} at {r['concurrency']}: "
        + ", ".join("/".join(f"{share:.2f}" for share in split) for split in r["round_cpu_split"])
        for r in rows
        if any(len(split) > 1 for split in r.get("round_cpu_split", ()))
    ]
    if splits:
        lines += [
            "",
            "Several server processes: each one's share of the server's CPU, by round "
            "(the kernel picks a process per connection, so an uneven split means more "
            "of the connections landed on one): " + "; ".join(splits) + ".",
        ]
    return lines


def _calls_cell(row: dict[str, Any]) -> str:
    if not row.get("verified", True):
        return "not verified"
    return f"{row['calls_per_s']:,.0f}" if row["calls_per_s"] else _NONE


def _unverified_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    notes = [
        f"- {r['subject']}"
        + (f" {r['case']}" if "case" in r else f" at {r['concurrency']} in flight")
        + ": "
        + "; ".join(dict.fromkeys(r["problems"]))
        for r in rows
        if not r.get("verified", True)
    ]
    if not notes:
        return []
    return ["", "**Not verified, so no figure** (see `bench.h2load`):", "", *notes]


def _http_rows(
    results: dict[str, Any], phase: str
) -> tuple[
    list[dict[str, Any]],
    list[str],
    dict[tuple[str, str], dict[str, Any]],
    dict[tuple[str, str, str], dict[str, Any]],
]:
    """The http phase's rows of `phase` ("latency" or "throughput"), its subjects in
    order, the rows by (case, subject) and the ratios by (case, subject, floor)."""
    rows: list[dict[str, Any]] = (results.get("http") or {}).get(phase, [])
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    by_key = {(r["case"], r["subject"]): r for r in rows}
    ratios = {
        (r["case"], r["subject"], r["floor"]): r
        for r in results.get("ratios", {}).get("http", {}).get("rows", [])
    }
    return rows, subjects, by_key, ratios


def _http_latency_table(results: dict[str, Any]) -> list[str]:
    rows, subjects, by_key, ratios = _http_rows(results, "latency")
    if not rows:
        return []
    header = ["case", "request"]
    for name in subjects:
        header += [f"{name} p50", f"{name} p99"]
    services = [n for n in subjects if n != "http-echo"]
    header += [f"{n}/http-echo p50" for n in services]
    peer = "mlserver" in subjects
    if peer:
        header.append("mlserver/actgrad p50")
    header.append("samples")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: dict[str, int] = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        first = by_key[case, subjects[0]]
        cells = [case, format_bytes(first["request_bytes"])]
        for name in subjects:
            r = by_key.get((case, name))
            if r is None:
                cells += [_NONE, _NONE]
                continue
            mark = ""
            if r["transport"] != first["transport"]:
                mark = f" [{notes.setdefault(r['transport'], len(notes) + 1)}]"
            cells += [format_time(r["p50_us"]) + mark, format_time(r["p99_us"])]
        for name in services:
            r = ratios.get((case, name, "http-echo"))
            cells.append(_ratio(r["p50_ratio"] if r else None))
        if peer:
            r = ratios.get((case, "actgrad", "mlserver"))
            cells.append(_ratio(r["p50_speedup"] if r else None))
        cells.append(str(first["samples"]))
        lines.append("| " + " | ".join(cells) + " |")
    for transport, number in notes.items():
        lines += ["", f"[{number}] {transport}."]
    return lines


def _http_throughput_table(results: dict[str, Any]) -> list[str]:
    rows, subjects, by_key, ratios = _http_rows(results, "throughput")
    if not rows:
        return []
    services = [n for n in subjects if n != "http-echo"]
    peer = "mlserver" in subjects
    header = ["case", *(f"{n} calls/s" for n in subjects)]
    header += [f"{n}/http-echo" for n in services]
    if peer:
        header.append("actgrad/mlserver")
    header += [f"{n} server CPU/call" for n in subjects]
    header += [f"{n}/http-echo CPU/call" for n in services]
    header += [f"{n} client CPU (cores)" for n in subjects]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in dict.fromkeys(r["case"] for r in rows):
        got = [by_key.get((case, n)) for n in subjects]
        cells = [case]
        cells += [_calls_cell(r) if r else _NONE for r in got]
        for name in services:
            r = ratios.get((case, name, "http-echo"))
            cells.append(_ratio(r["calls_per_s_ratio"] if r else None))
        if peer:
            r = ratios.get((case, "actgrad", "mlserver"))
            cells.append(_ratio(r["calls_per_s_ratio"] if r else None))
        cells += [format_time(r["server_cpu_us_per_call"]) if r else _NONE for r in got]
        for name in services:
            r = ratios.get((case, name, "http-echo"))
            cells.append(_ratio(r["server_cpu_ratio"] if r else None))
        cells += [
            f"{r['client_cpu_cores']:.2f}" if r and r["client_cpu_cores"] is not None else _NONE
            for r in got
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + _unverified_notes(rows)


def _targets_table(results: dict[str, Any]) -> list[str]:
    targets = results.get("ratios", {}).get("http", {}).get("targets", [])
    if not targets:
        return []
    lines = ["| target | value | wanted | |", "|---|---|---|---|"]
    for t in targets:
        wanted = ("<= " if t["at_most"] else ">= ") + f"{t['threshold']:g}x"
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_ratio(t['value'])} | {wanted} | {met} |")
    return lines


def _http_lines(results: dict[str, Any]) -> list[str]:
    http = results.get("http")
    if not http:
        return []
    lines: list[str] = []
    if http.get("mlserver_skipped"):
        lines += [f"**{http['mlserver_skipped']}.**", ""]
    for server in http.get("servers", []):
        meta = server.get("server_metadata")
        if meta:
            extensions = ", ".join(meta.get("extensions") or []) or "none"
            lines += [
                f"`{server['name']}` answered `GET /v2` as {meta.get('name')} "
                f"{meta.get('version')} (extensions: {extensions}).",
                "",
            ]
    latency = _http_latency_table(results)
    if latency:
        lines += ["Latency, one call at a time (Python keep-alive client):", "", *latency, ""]
    throughput = _http_throughput_table(results)
    if throughput:
        concurrency = http["throughput"][0]["concurrency"]
        lines += [
            f"Throughput at {concurrency} in flight (h2load; HTTP/1.1, one connection a call; "
            "MLServer's gRPC rows over 8 HTTP/2 connections), median over rounds:",
            "",
            *throughput,
            "",
        ]
    targets = _targets_table(results)
    if targets:
        lines += ["Issue 21's targets, in this run:", "", *targets, ""]
    return lines


def _server_memory_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("server_memory", [])
    if not rows:
        return []
    names = list(dict.fromkeys(r["subject"] for r in rows))
    by_key = {(r["subject"], r["elements"]): r for r in rows}
    header = ["elements", "tensor"]
    for n in names:
        header += [f"{n} peak RSS", f"{n} growth", f"{n} growth/tensor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in sorted({r["elements"] for r in rows}):
        tensor = by_key[names[0], size]["tensor_bytes"]
        cells = [format_elements(size), format_bytes(tensor)]
        for n in names:
            r = by_key[n, size]
            cells += [
                format_bytes(r["peak_rss_bytes"]),
                format_bytes(r["growth_bytes"]),
                # Tiny tensors: growth is allocator noise, a ratio would mislead.
                f"{r['growth_bytes'] / tensor:.2f}" if tensor >= _MIB else _NONE,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _memory_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("memory", [])
    if not rows:
        return []
    header = ["subject", "operation", "elements", "tensor", "transport", "idle RSS", "peak RSS"]
    header += ["peak/tensor", "(peak-idle)/tensor", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        measured = r["status"] == "measured"
        lines.append(
            "| "
            + " | ".join(
                [
                    r["subject"],
                    r.get("label", r["op"]),
                    format_elements(r["elements"]),
                    format_bytes(r["tensor_bytes"]),
                    format_transport(r.get("transport")),
                    format_bytes(r.get("idle_rss_bytes")),
                    format_bytes(r.get("peak_rss_bytes")),
                    f"{r['peak_over_tensor']:.2f}" if measured else _NONE,
                    f"{r['growth_over_tensor']:.2f}" if measured else _NONE,
                    r["status"] if measured else r["reason"],
                ]
            )
            + " |"
        )
    return lines


def _roundtrip_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("roundtrip", [])
    if not rows:
        return []
    header = ["elements", "tensor", "message limit", "transport", "result", "time"]
    header += ["idle RSS", "peak RSS", "peak/tensor"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        result = r["status"] if r["status"] == "correct" else f"{r['status']}: {r['reason']}"
        seconds = r.get("seconds")
        lines.append(
            "| "
            + " | ".join(
                [
                    format_elements(r["elements"]),
                    format_bytes(r["tensor_bytes"]),
                    format_bytes(r["max_message_bytes"]),
                    format_transport(r.get("transport")),
                    result,
                    format_time(seconds * 1e6) if seconds is not None else _NONE,
                    format_bytes(r.get("idle_rss_bytes")),
                    format_bytes(r.get("peak_rss_bytes")),
                    f"{r['peak_over_tensor']:.2f}" if "peak_over_tensor" in r else _NONE,
                ]
            )
            + " |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report of a run."""
    lines = [f"# actgrad benchmark: {results['name']}", "", *_machine_lines(results), ""]
    sections: Sequence[tuple[str, str, list[str]]] = (
        (
            "Latency",
            "One call at a time, float32, shape (elements/1024, 1024). The transport "
            "floor (`echo`) sends the same request bytes through a bare grpcio echo "
            "server in its own process: one unary request, or, where the SDK streams "
            "(`transport`: streamed, chunk count x largest chunk request), a streaming "
            "echo of the same chunk requests. The compute floor (`onnxruntime`) runs "
            "the server's graph in-process on the whole array. Ratios are actgrad over "
            "the floor (lower is better; 1.00x is the floor).",
            _latency_table(results),
        ),
        (
            "Throughput",
            _throughput_intro(results),
            _throughput_table(results),
        ),
        (
            "HTTP (issue 21)",
            "Open Inference Protocol infer of `sigmoid` (the same graph as Activate) on "
            "actgrad's HTTP port: JSON numbers (`json`) or Triton's binary tensor "
            "extension (`binary`). `http-echo` answers the same request bytes as they came "
            "on actgrad's own HTTP stack (uvicorn, httptools, uvloop); `mlserver` is "
            "MLServer 1.7 serving the same ONNX graph (its REST for JSON; for binary its "
            "gRPC with raw_input_contents, as its REST has no binary extension). Ratios "
            "over the echo: lower is better for p50 and CPU, higher for calls/s; "
            "mlserver/actgrad p50 and actgrad/mlserver calls/s: how many times faster "
            "actgrad is.",
            _http_lines(results),
        ),
        (
            "Server memory during the latency run",
            "RSS high-water mark of each server process while it served that size "
            "(VmHWM reset before each size), and its growth over the RSS just before.",
            _server_memory_table(results),
        ),
        (
            "Peak server memory serving one tensor",
            "A fresh server per row serves one call (streamed where the SDK streams it); "
            "peak is the server's VmHWM, reset just before the call.",
            _memory_table(results),
        ),
        (
            "Large-tensor round trip",
            "A fresh actgrad server with `actgrad serve`'s default limits and the SDK "
            "with its defaults: one Activate(sigmoid) call, every value of the result "
            "compared with onnxruntime in-process (rtol 1e-5, atol 1e-6).",
            _roundtrip_table(results),
        ),
    )
    for title, intro, table in sections:
        if table:
            lines += [f"## {title}", "", intro, "", *table, ""]
    return "\n".join(lines)


def _chart(results: dict[str, Any], path: Path) -> None:
    latency = [r for r in results.get("latency", []) if "p50_us" in r]
    ops = list(dict.fromkeys((r["op"], r["label"]) for r in latency))
    throughput = results.get("throughput", [])
    memory = [r for r in results.get("memory", []) if r["status"] == "measured"]
    panels = len(ops) + bool(throughput) + bool(memory)
    columns = min(max(panels, 1), 3)
    nrows = -(-max(panels, 1) // columns)
    fig, grid = plt.subplots(nrows, columns, figsize=(5.2 * columns, 4.2 * nrows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for spare in axes[max(panels, 1) :]:
        spare.set_axis_off()
    subjects = _subjects(results)
    colors = {name: f"C{i}" for i, name in enumerate(subjects)}
    index = 0
    for op, label in ops:
        ax = axes[index]
        index += 1
        for name in subjects:
            rows = sorted(
                (r for r in latency if r["op"] == op and r["subject"] == name),
                key=lambda r: r["elements"],
            )
            if not rows:
                continue
            xs = [r["elements"] for r in rows]
            ax.plot(xs, [r["p50_us"] for r in rows], "o-", color=colors[name], label=f"{name} p50")
            ax.plot(xs, [r["p99_us"] for r in rows], ":", color=colors[name], label=f"{name} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(label)
        ax.set_xlabel("float32 elements")
        ax.set_ylabel("latency (µs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if throughput:
        ax = axes[index]
        index += 1
        names = list(dict.fromkeys(r["subject"] for r in throughput))
        levels = sorted({r["concurrency"] for r in throughput})
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            by_level = {
                r["concurrency"]: r["calls_per_s"] or 0 for r in throughput if r["subject"] == name
            }
            ax.bar(
                [j + i * width for j in range(len(levels))],
                [by_level.get(level, 0) for level in levels],
                width,
                color=colors.get(name),
                label=name,
            )
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(levels))])
        ax.set_xticklabels([str(level) for level in levels])
        ax.set_xlabel("calls in flight")
        ax.set_ylabel("calls/s")
        ax.set_title(f"Throughput, {format_elements(throughput[0]['elements'])} elements")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    if memory:
        ax = axes[index]
        labels = [f"{r['subject']}\n{r['op']} {format_elements(r['elements'])}" for r in memory]
        peaks = [r["peak_rss_bytes"] / _MIB for r in memory]
        bars = ax.bar(labels, peaks, color=[colors.get(r["subject"], "C3") for r in memory])
        ax.bar_label(bars, [f"{r['peak_over_tensor']:.2f}x" for r in memory], fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_ylabel("peak server RSS (MiB)")
        ax.set_title("Peak server memory, one call")
        ax.grid(True, axis="y", alpha=0.3)
    if panels == 0:
        axes[0].text(0.5, 0.5, "nothing measured", ha="center", va="center")
        axes[0].set_axis_off()
    m = results["machine"]
    fig.suptitle(f"actgrad benchmark, {m['date']}, {m['cpu_model']} ({m['usable_cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict[str, Any], out: Path, name: str) -> list[Path]:
    """Writes ``<name>.json``, ``<name>.md`` and ``<name>.png`` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown(results))
    _chart(results, paths[2])
    return paths
