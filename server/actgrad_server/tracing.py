"""OpenTelemetry spans, one per call, when `--tracing` is on (needs ``actgrad[otel]``).

The server only uses the OpenTelemetry API: which provider records the spans and
where they go (an OTLP collector, the console) is the deployment's choice, e.g.
``opentelemetry-instrument actgrad serve`` with the ``OTEL_*`` variables. The
caller's W3C trace context (``traceparent`` metadata, which the SDK sends when the
calling program uses OpenTelemetry) makes each span a child of the caller's. Off,
nothing here is imported or run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actgrad_server.errors import ConfigError

__all__ = ["CallSpan", "Tracing"]

_NO_TRACE = "-"


class Tracing:
    """Starts the spans of calls; raises ConfigError when OpenTelemetry is missing."""

    def __init__(self) -> None:
        try:
            from opentelemetry import propagate, trace
        except ImportError:
            raise ConfigError(
                "tracing needs OpenTelemetry: pip install '/path/to/actgrad[otel]' "
                "(the otel extra of your actgrad clone; PyPI's 'actgrad' is another project)"
            ) from None
        self._propagate = propagate
        self._trace = trace
        self._tracer = trace.get_tracer("actgrad_server")

    def start(self, rpc: str, metadata: Sequence[tuple[str, Any]] | None) -> CallSpan:
        """The span of call `rpc` ("package.Service/Method"), child of the caller's."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = self._propagate.extract(carrier)
        service, _, method = rpc.partition("/")
        span = self._tracer.start_span(
            rpc,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        return CallSpan(span, self._trace)

    def start_http(self, method: str, path: str, headers: dict[str, str]) -> CallSpan:
        """The span of an HTTP request, child of the caller's (`traceparent` header);
        named ``<method> <route>`` once the route is known (`CallSpan.end_http`)."""
        parent = self._propagate.extract(headers)
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        return CallSpan(span, self._trace, method)


class CallSpan:
    """One call's span: labelled when the request is read, ended with the status."""

    def __init__(self, span: Any, trace: Any, method: str = "") -> None:
        self._span = span
        self._trace = trace
        self._method = method  # an HTTP request's
        context = span.get_span_context()
        self.trace_id = f"{context.trace_id:032x}" if context.is_valid else _NO_TRACE

    def label(self, function: str, dtype: str, elements: int | None) -> None:
        if function:
            self._span.set_attribute("actgrad.function", function)
        if dtype:
            self._span.set_attribute("actgrad.dtype", dtype)
        if elements is not None:
            self._span.set_attribute("actgrad.elements", elements)

    def end_http(self, route: str | None, status: int) -> None:
        """Ends an HTTP request's span; 5xx answers are errors (OpenTelemetry's rule for
        server spans: a 4xx is the caller's)."""
        if route:
            self._span.update_name(f"{self._method} {route}")
            self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(status)))
        self._span.end()

    def end(self, code: int, code_name: str) -> None:
        self._span.set_attribute("rpc.grpc.status_code", code)
        if code != 0:
            self._span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, code_name))
        self._span.end()
