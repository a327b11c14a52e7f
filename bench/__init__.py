"""The actgrad benchmark harness: the service against its transport and compute floors.

``python -m bench`` (or ``make bench``) measures, in one interleaved run, the latency
of actgrad's RPCs through the SDK against a real ``actgrad serve`` process, a bare
grpcio echo of the same request bytes in its own process (the transport floor) and
onnxruntime in-process on the same array (the compute floor); throughput at several
concurrency levels, sent by h2load and verified call by call; the HTTP front end
against a bare echo on the same HTTP stack and against MLServer; and the server's
peak memory. It writes JSON, Markdown and a PNG
chart under ``bench/results/``. A benchmark is not a test: nothing here asserts on time.

Tensors above the SDK's stream threshold are streamed in chunks, and their echo is a
streaming echo of the same chunk requests. Each thing measured is a *subject*
(:mod:`bench.subjects`); a serving variant (several worker processes, shared memory,
other engine or client settings) is one more subject, registered or given as
``--variant``. :mod:`bench.settings` runs the settings sweeps.
"""
