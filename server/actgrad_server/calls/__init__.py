"""What surrounds every call, whichever front end (gRPC, HTTP) receives it.

Each concern is a small module of plain values, and each front end is an adapter that
reads its wire form into them and writes their answers back:

- `request_ids`: the caller's request id when sane, else a new one;
- `admission`: the drain's refusal, bearer tokens, the concurrency and size limits,
  as `Refusal`s that each front end maps to its own status;
- `labels`: the bounded metric labels of a call (its function, its dtype);
- `records`: the process's account of calls (received, open: what the drain waits
  for and the idle trim watches) and the record of a finished one (metrics with a
  protocol label, the access log line).

Tracing is `actgrad_server.tracing`. The gRPC adapter is `api/_interceptors.py` (with
`_observed`, `_queue` and `_streams`), the HTTP one `http/pipeline.py`.
"""
