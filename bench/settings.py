"""``python -m bench.settings``: the sweeps behind docs/performance.md's settings table.

Each sweep is one interleaved harness run in which the default server (or client)
is measured beside variants that change one setting, with the echo floor of each
chunking: ``--intra-op-threads``, ``--chunk-elements``, the SDK's ``chunk_bytes``
and ``stream_threshold_bytes``. Results go to ``bench/results/settings-*``. Extra
arguments (e.g. ``--repeats 5``, ``--out DIR``) are passed to every sweep.

    python -m bench.settings [harness flags]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bench import harness

__all__ = ["SWEEPS", "main"]

_SHORT = ("--repeats=3", "--warmup=3", "--min-calls=4", "--cell-seconds=0.2")

SWEEPS: dict[str, tuple[str, ...]] = {
    # onnxruntime's intra-op threads, small and large tensors, and throughput.
    "settings-intra-op": (
        "--phases=latency,throughput",
        "--sizes=16,64Ki,1Mi,16Mi",
        "--ops=activate,gradient",
        "--concurrency=1,64",
        "--throughput-seconds=1.5",
        "--subjects=actgrad,io1,io2,echo",
        "--variant=io1:actgrad:--intra-op-threads=1",
        "--variant=io2:actgrad:--intra-op-threads=2",
    ),
    # The engine's chunk size: it applies to inputs the SDK sends unary (<= 8 MiB).
    "settings-chunk-elements": (
        "--phases=latency",
        "--sizes=1Mi,2Mi",
        "--ops=activate,gradient",
        "--subjects=actgrad,ce64k,ce256k,ce4m,echo",
        "--variant=ce64k:actgrad:--chunk-elements=65536",
        "--variant=ce256k:actgrad:--chunk-elements=262144",
        "--variant=ce4m:actgrad:--chunk-elements=4194304",
    ),
    # ... and its memory: a fresh server per call.
    "settings-chunk-elements-memory": (
        "--phases=memory",
        "--memory-sizes=1Mi,2Mi",
        "--roundtrip-sizes=",
        "--ops=activate,gradient",
        "--subjects=actgrad,ce64k,ce256k,ce4m",
        "--variant=ce64k:actgrad:--chunk-elements=65536",
        "--variant=ce256k:actgrad:--chunk-elements=262144",
        "--variant=ce4m:actgrad:--chunk-elements=4194304",
    ),
    # The SDK's chunk size on a streamed 64 MiB tensor, with the echo of some.
    "settings-chunk-bytes": (
        "--phases=latency",
        "--sizes=16Mi",
        "--ops=activate,gradient",
        "--subjects=actgrad,cb256k,cb1m,cb4m,cb8m,echo,echo-cb256k,echo-cb8m",
        "--variant=cb256k:actgrad:client.chunk_bytes=256Ki",
        "--variant=cb1m:actgrad:client.chunk_bytes=1Mi",
        "--variant=cb4m:actgrad:client.chunk_bytes=4Mi",
        "--variant=cb8m:actgrad:client.chunk_bytes=8Mi",
        "--variant=echo-cb256k:echo:client.chunk_bytes=256Ki",
        "--variant=echo-cb8m:echo:client.chunk_bytes=8Mi",
    ),
    # Where streaming starts to pay: stream from 512 KiB up, against the default.
    "settings-stream-threshold": (
        "--phases=latency",
        "--sizes=256Ki,1Mi,2Mi,4Mi",
        "--ops=activate,gradient",
        "--subjects=actgrad,st512k,echo,echo-st512k",
        "--variant=st512k:actgrad:client.stream_threshold_bytes=512Ki",
        "--variant=echo-st512k:echo:client.stream_threshold_bytes=512Ki",
    ),
    # ... and unary up to 32 MiB (the most half the default limit allows).
    "settings-stream-threshold-high": (
        "--phases=latency",
        "--sizes=4Mi,8Mi",
        "--ops=activate,gradient",
        "--subjects=actgrad,st32m,echo,echo-st32m",
        "--variant=st32m:actgrad:client.stream_threshold_bytes=32Mi",
        "--variant=echo-st32m:echo:client.stream_threshold_bytes=32Mi",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    for name, args in SWEEPS.items():
        status = harness.main([f"--name={name}", *_SHORT, *args, *extra])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
