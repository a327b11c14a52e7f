"""The SDK's channel: its options, credentials, retries, and the checks of them.

What both clients open their channel with (`channel_options`, `channel_credentials`),
the per-call checks of a token and a timeout, and the stubs made on a channel. No
request or response is built here.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc

from actgrad.v1 import activation_pb2
from actgrad.wire.frames import codec_for

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "FIRST_CONTACT_SECONDS",
    "RETRYABLE",
    "ChannelOptions",
    "channel_credentials",
    "channel_options",
    "check_connections",
    "check_timeout",
    "check_token",
    "retry_options",
    "retry_pause",
    "stub_for",
    "trace_context",
]

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: No count of attempts: a call is tried again for as long as its deadline allows.
DEFAULT_MAX_ATTEMPTS: int | None = None
_MAX_ATTEMPTS_LIMIT = 1000
#: How long a call keeps trying a target this client has never had an answer from
#: (a wrong port, a server not started) before it raises UNAVAILABLE, unless the
#: client waits for ready. A target it has had answers from is tried for the
#: whole deadline: it is draining or restarting, and will be back.
FIRST_CONTACT_SECONDS = 2.0
# A channel whose connection failed tries again after gRPC's reconnect backoff,
# which starts at 1 s and grows 1.6x to 120 s while the server is away (connect
# attempts at 1, 2.6, 5.2, 9.4 s ... after the first refusal), so a server back after
# a 3-5 s restart could be reached seconds late. Capped at 1 s, a restarted server
# is reached within a second of listening.
_RECONNECT_BACKOFF = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}

ChannelOptions = Sequence[tuple[str, Any]]

# A client's connections (`connections=`): a few per server process is plenty.
_MAX_CONNECTIONS = 64
# gRPC shares a connection between channels to the same target unless a channel
# keeps a subchannel pool of its own.
_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


#: Load-balancing policies a client may ask for (gRPC's names).
LOAD_BALANCING = ("pick_first", "round_robin")


def check_connections(connections: Any) -> int:
    if isinstance(connections, bool) or not isinstance(connections, int):
        raise TypeError(f"connections must be an int, got {type(connections).__name__}")
    if not 1 <= connections <= _MAX_CONNECTIONS:
        raise ValueError(f"connections must be in 1..{_MAX_CONNECTIONS}, got {connections}")
    return connections


def channel_options(
    max_message_bytes: int,
    max_attempts: Any,
    options: ChannelOptions | None,
    load_balancing: str | None = None,
    *,
    connections: int = 1,
) -> list[tuple[str, Any]]:
    """The channel's arguments: message limits, retries and load balancing, then the
    caller's.

    With more than one of `connections`, each channel keeps a subchannel pool of
    its own, so that each is a connection of its own (gRPC shares one between the
    channels of a process otherwise).

    Our options first; a caller's option with the same key wins. `load_balancing`
    ("round_robin") spreads calls over every address the target resolves to, e.g.
    the pods behind a headless Kubernetes Service (``dns:///actgrad-headless:50051``)
    or a static list (``ipv4:10.0.0.1:50051,10.0.0.2:50051``).
    """
    merged: dict[str, Any] = {
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.max_receive_message_length": max_message_bytes,
        **_RECONNECT_BACKOFF,
        **retry_options(max_attempts, max_message_bytes),
    }
    if load_balancing is not None:
        if load_balancing not in LOAD_BALANCING:
            raise ValueError(
                f"load_balancing must be one of {', '.join(LOAD_BALANCING)}, got {load_balancing!r}"
            )
        merged["grpc.service_config"] = json.dumps({"loadBalancingConfig": [{load_balancing: {}}]})
    if check_connections(connections) > 1:
        merged.update((_OWN_CONNECTION,))
    merged.update(dict(options or ()))
    return list(merged.items())


def trace_context() -> tuple[tuple[str, str], ...]:
    """W3C trace context of the current OpenTelemetry span, as call metadata.

    Only when the program already uses OpenTelemetry (its trace API is imported):
    the SDK never imports it itself, so this costs a dict lookup otherwise.
    """
    if "opentelemetry.trace" not in sys.modules:
        return ()
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


class ActivationStub:
    """actgrad.v1.ActivationService's methods on a channel, as the generated stub has
    them, with the codecs of `actgrad.wire.frames`: a large tensor is copied once into
    the bytes gRPC sends (`Outgoing` requests), and answers are read as views of the
    received bytes."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        service = activation_pb2.DESCRIPTOR.services_by_name["ActivationService"]
        for method in service.methods:
            kind = ("stream" if method.client_streaming else "unary") + (
                "_stream" if method.server_streaming else "_unary"
            )
            request = codec_for(getattr(activation_pb2, method.input_type.name))
            response = codec_for(getattr(activation_pb2, method.output_type.name))
            setattr(
                self,
                method.name,
                getattr(channel, kind)(
                    f"/{service.full_name}/{method.name}",
                    request_serializer=request.serialize,
                    response_deserializer=response.parse,
                    _registered_method=True,
                ),
            )


def stub_for(stubs: dict[str, Any], channel: grpc.Channel | grpc.aio.Channel, service: str) -> Any:
    """The stub of `service` on `channel`, made on first use and kept in `stubs`."""
    made = stubs.get(service)
    if made is None:
        # The stubs are untyped; `_invoke` looks their methods up by name.
        if service == "health":
            made = health_pb2_grpc.HealthStub(channel)
        else:
            made = ActivationStub(channel)
        stubs[service] = made
    return made


def _check_pem(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or not value.strip():
        raise TypeError(f"{name} must be non-empty PEM bytes, got {type(value).__name__}")
    return value


def channel_credentials(
    tls: bool | None,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials, or None for a plaintext channel.

    `tls=None` means TLS when any certificate is given; `tls=True` alone verifies
    the server against the system's roots.
    """
    roots = _check_pem(root_certificates, "root_certificates")
    chain = _check_pem(certificate_chain, "certificate_chain")
    key = _check_pem(private_key, "private_key")
    if (chain is None) != (key is None):
        raise ValueError("certificate_chain and private_key must be given together")
    wants_tls = roots is not None or chain is not None
    if tls is None:
        tls = wants_tls
    elif not isinstance(tls, bool):
        raise TypeError(f"tls must be a bool or None, got {type(tls).__name__}")
    if not tls:
        if wants_tls:
            raise ValueError("tls=False contradicts the certificates given")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def check_token(token: Any) -> str:
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    if not token or any(not (0x21 <= ord(ch) <= 0x7E) for ch in token):
        raise ValueError("token must be non-empty printable ASCII without spaces")
    return token


def retry_options(max_attempts: Any, max_message_bytes: int) -> dict[str, Any]:
    """Channel options for `max_attempts` (checked here: None, or an int from 1):
    gRPC's transparent retries (of calls that never reached a server) stay on unless
    it is 1.

    The retries of UNAVAILABLE themselves are the client's (`retry_pause`), not a
    gRPC retry policy: gRPC never retries a call whose answer had begun (a
    connection reset in the middle of a large answer during a drain), and its
    policy would keep a copy of every request up to a message in size.
    """
    if max_attempts is None:
        return {"grpc.enable_retries": 1}
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise TypeError(f"max_attempts must be an int or None, got {type(max_attempts).__name__}")
    if not 1 <= max_attempts <= _MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"max_attempts must be in 1..{_MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
    return {"grpc.enable_retries": 0 if max_attempts == 1 else 1}


#: Statuses a call is tried again for. Every RPC of the service is a pure function
#: of its request, so trying again is always safe: UNAVAILABLE (no server, or one
#: draining or restarting), and CANCELLED that this client did not ask for (a
#: server that cancelled its calls when it stopped).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
_INITIAL_BACKOFF = 0.1
_MAX_BACKOFF = 1.0
# An attempt needs some time of its own after the pause.
_ATTEMPT_SECONDS = 0.05


def retry_pause(attempt: int, remaining: float) -> float | None:
    """How long to wait before attempt `attempt + 1`, or None when the time left
    (`remaining` seconds: the deadline, or the first contact's window) leaves no
    room for it.

    Exponential backoff with full jitter, as gRPC's own: up to 0.1 s doubling to
    1 s, cut so that the last attempt still fits.
    """
    if remaining <= _ATTEMPT_SECONDS:
        return None
    pause = random.uniform(0.0, min(_MAX_BACKOFF, _INITIAL_BACKOFF * 2 ** min(attempt - 1, 10)))
    return min(pause, remaining - _ATTEMPT_SECONDS)


def check_timeout(timeout: Any, *, name: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(timeout).__name__}")
    value = float(timeout)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0 seconds, got {timeout!r}")
    return value
