"""The actgrad benchmark harness: the service against its transport and compute floors.

``python -m bench`` (or ``make bench``) measures, in one interleaved run, the latency
of actgrad's RPCs through the SDK against a real ``actgrad serve`` process, a bare
grpcio echo of the same request bytes in its own process (the transport floor) and
onnxruntime in-process on the same array (the compute floor); throughput at several
concurrency levels; and the server's peak memory. It writes JSON, Markdown and a PNG
chart under ``bench/results/``. A benchmark is not a test: nothing here asserts on time.

Each thing measured is a *subject* (:mod:`bench.subjects`); a new serving variant
(streaming, several worker processes, shared memory) is one more subject.
"""
