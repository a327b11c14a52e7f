"""The SDK's two clients over one base: `Client` (blocking) and `AsyncClient` (asyncio).

`_BaseClient` checks the options and holds what both clients share besides the
channel: the channel's options and credentials (`actgrad._channel`), the default
deadline, the token, and, inherited from `RequestBuilder` (`actgrad._requests`),
turning numpy arrays and keyword parameters into prepared calls whose `parse`
reads the answer (`actgrad._responses`). `Client` runs those calls on a blocking
channel and `AsyncClient` awaits them on a `grpc.aio` channel: I/O and lifetime
only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import grpc
import grpc.aio
import numpy.typing as npt

from actgrad import _malloc
from actgrad._channel import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    FIRST_CONTACT_SECONDS,
    RETRYABLE,
    ChannelOptions,
    channel_credentials,
    channel_options,
    check_connections,
    check_timeout,
    check_token,
    retry_pause,
    stub_for,
    trace_context,
)
from actgrad._requests import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_SHARED_MEMORY_MIN_BYTES,
    DEFAULT_STREAM_THRESHOLD_BYTES,
    AnyRpc,
    NeedsCatalog,
    NeedsServerInfo,
    RequestBuilder,
    ResultT,
    Rpc,
    StreamRpc,
)
from actgrad._types import (
    DenseVjpResult,
    FunctionInfo,
    GradientFlowResult,
    ServerInfo,
    VjpResult,
)
from actgrad.errors import ActgradError, UnavailableError, from_grpc_error

__all__ = ["AsyncClient", "Client"]

# Outcomes of an attempt that show no server answered it.
_NO_ANSWER = RETRYABLE | {grpc.StatusCode.DEADLINE_EXCEEDED}


#: The activation of `dense` and `dense_vjp` when none is named; None is the bare net
#: output x . weight^T + bias.
DEFAULT_DENSE_ACTIVATION = "relu"


def _refused_while_sending(exc: grpc.RpcError) -> bool:
    """True for grpc.aio's INTERNAL "Internal error from Core" of a stream whose chunk
    could not be sent because the server had already ended the call: grpc.aio then
    records INTERNAL in place of the server's status (a draining server's
    UNAVAILABLE, seen every time such a stream was refused)."""
    if exc.code() is not grpc.StatusCode.INTERNAL:
        return False
    debug = getattr(exc, "debug_error_string", None)
    return callable(debug) and "SendMessageOperation" in str(debug())


class _BaseClient(RequestBuilder):
    """Options, request building and response decoding shared by both clients."""

    # The subclass's connections (sync or asyncio channels) and a stub cache for each.
    _channels: list[Any]
    _stubs: list[dict[str, Any]]

    def __init__(
        self,
        target: str,
        *,
        timeout: float,
        max_message_bytes: int,
        options: ChannelOptions | None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        wait_for_ready: bool = False,
        load_balancing: str | None = None,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
        connections: int = 1,
    ) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError("target must be a non-empty 'host:port' string")
        # Large messages reuse heap memory instead of fresh mappings (see _malloc).
        _malloc.prime()
        self._timeout = check_timeout(timeout, name="timeout")
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int):
            raise TypeError("max_message_bytes must be an int")
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {max_message_bytes}")
        self._max_message_bytes = max_message_bytes
        self._credentials = channel_credentials(
            tls, root_certificates, certificate_chain, private_key
        )
        self._metadata: tuple[tuple[str, str], ...] = (
            () if token is None else (("authorization", f"Bearer {check_token(token)}"),)
        )
        self._connections = check_connections(connections)
        self._channel_options = channel_options(
            max_message_bytes, max_attempts, options, load_balancing, connections=connections
        )
        # Calls take the connections in turn (next() of a count is atomic in CPython).
        self._turns = itertools.count()
        self._max_attempts = max_attempts
        if not isinstance(wait_for_ready, bool):
            raise TypeError(f"wait_for_ready must be a bool, got {type(wait_for_ready).__name__}")
        self._wait_for_ready = wait_for_ready
        #: Set by the first answer from a server (any status but the retryable
        #: ones): from then on, an unreachable target is one that will be back.
        self._reached = False
        self._closed = False
        super().__init__(
            target,
            max_message_bytes=max_message_bytes,
            stream_threshold_bytes=stream_threshold_bytes,
            chunk_bytes=chunk_bytes,
            shared_memory=shared_memory,
            shared_memory_min_bytes=shared_memory_min_bytes,
        )

    @property
    def target(self) -> str:
        """The server address this client talks to, e.g. ``"localhost:50051"``."""
        return self._target

    @property
    def timeout(self) -> float:
        """The default deadline of every call, in seconds."""
        return self._timeout

    @property
    def closed(self) -> bool:
        """True once `close()` was called; further calls raise RuntimeError."""
        return self._closed

    @property
    def shared_memory(self) -> bool:
        """True while calls may use shared memory (asked for, and not refused)."""
        return self._shared_pool is not None

    @property
    def secure(self) -> bool:
        """True when the channel uses TLS."""
        return self._credentials is not None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        tls = ", tls" if self.secure else ""
        return f"{type(self).__name__}({self._target!r}, timeout={self._timeout}{tls}, {state})"

    # -- shared by the I/O of both clients --------------------------------------

    def _call_options(self, end: float, *, wait_for_ready: bool = False) -> dict[str, Any]:
        """Per-call options for a call whose deadline is the monotonic time `end`."""
        options: dict[str, Any] = {"timeout": max(end - time.monotonic(), 0.001)}
        metadata = self._metadata + trace_context()
        if metadata:
            options["metadata"] = metadata
        if wait_for_ready:
            options["wait_for_ready"] = True
        return options

    def _stub_in_turn(self, service: str) -> Any:
        """The stub of `service` on the connection whose turn it is (each in turn);
        `_channels` and their `_stubs` are the subclass's, made when it opens them."""
        turn = next(self._turns) % self._connections if self._connections > 1 else 0
        return stub_for(self._stubs[turn], self._channels[turn], service)

    def _deadline(self, timeout: float | None) -> float:
        """The monotonic time by which a call started now must end."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        seconds = self._timeout if timeout is None else check_timeout(timeout, name="timeout")
        return time.monotonic() + seconds

    def _waits_for_ready(self, service: str) -> bool:
        """True when a call waits for a server that cannot be reached yet (starting,
        restarting) within its deadline (``wait_for_ready=True``); never for health
        checks (a probe wants the first answer)."""
        return service == "activation" and self._wait_for_ready

    def _answered(self, code: grpc.StatusCode | None) -> None:
        """Notes an attempt's outcome (None: OK): any answer but the retryable
        statuses, and the deadline, shows that the server was reached."""
        if not self._reached and code not in _NO_ANSWER:
            self._reached = True

    def _retry_pause(
        self, service: str, code: grpc.StatusCode, attempt: int, begun: float, end: float
    ) -> float | None:
        """Seconds to wait before trying a call of `service` (first tried at
        monotonic `begun`) again after an attempt that ended in `code`, or None for
        no retry.

        Calls of the activation service are retried on RETRYABLE codes, within the
        deadline and `max_attempts`; while this client has never reached its
        server (and does not wait for ready), only within FIRST_CONTACT_SECONDS
        of the call's start. Health checks never are (a probe wants the first
        answer).
        """
        if service != "activation":
            return None
        if self._max_attempts is not None and attempt >= self._max_attempts:
            return None
        if code not in RETRYABLE:
            return None
        now = time.monotonic()
        remaining = end - now
        if not self._reached and not self._wait_for_ready:
            remaining = min(remaining, begun + FIRST_CONTACT_SECONDS - now)
        return retry_pause(attempt, remaining)

    def _error(self, exc: grpc.RpcError) -> ActgradError:
        """The SDK's error for `exc`; UNAVAILABLE from a server never reached names
        the target (gRPC's details name the address tried and the cause)."""
        error = from_grpc_error(exc)
        if error.code is grpc.StatusCode.UNAVAILABLE and not self._reached:
            return UnavailableError(f"cannot reach {self._target}: {error.details}")
        return error

    def _fallback(self, rpc: Rpc[ResultT], exc: grpc.RpcError) -> AnyRpc[ResultT]:
        """What to call instead of `rpc`, which failed with `exc`; raises its error if nothing.

        Only a call in shared memory has a fallback, taken when the server refuses
        shared memory (then this client stops asking).
        """
        error = self._error(exc)
        if rpc.fallback is None or error.code is not grpc.StatusCode.FAILED_PRECONDITION:
            raise error from exc
        self._stop_sharing(f"the server answered {error.code.name}: {error.details}")
        return rpc.fallback()


class Client(_BaseClient):
    """Blocking client of an actgrad server. numpy arrays in, numpy arrays out.

    Inputs may be numpy arrays of float32, float64, float16 or bfloat16
    (``ml_dtypes.bfloat16``), lists or scalars (which become float64); the result
    has the input's dtype and shape. Returned arrays are read-only views of the
    response bytes; ``.copy()`` one to modify it in place. Options are
    keyword-only; `timeout` (seconds) is the default deadline of every call and
    each method takes its own ``timeout=`` too::

        import numpy as np
        from actgrad import Client

        with Client("localhost:50051", timeout=10.0) as client:
            y = client.activate(np.linspace(-3, 3, 7, dtype=np.float32), "gelu")

    `max_message_bytes` sets the channel's send and receive limits; `options` are
    extra ``grpc`` channel arguments (they override ours on the same key).

    Security: `root_certificates` (PEM bytes of the CA that signed the server's
    certificate) turns on TLS; `certificate_chain` and `private_key` (PEM bytes)
    are the client certificate of mutual TLS; ``tls=True`` alone uses the system's
    roots. `token` is sent as ``authorization: Bearer <token>`` on every call
    (use it over TLS)::

        ca = Path("ca.pem").read_bytes()
        with Client("actgrad.internal:443", root_certificates=ca, token=token) as client:
            ...

    ``load_balancing="round_robin"`` spreads calls over every address the target
    resolves to (the pods of a headless Kubernetes Service,
    ``dns:///actgrad-headless.ns.svc:50051``, or ``ipv4:10.0.0.1:50051,10.0.0.2:50051``);
    the default, gRPC's pick_first, sends every call over one connection.

    ``connections=N`` (1 to 64; default 1) opens N connections of this client's own
    and sends its calls over them in turn. A server with several worker processes
    (``actgrad serve --workers``, by default one per CPU) serves each connection in
    one worker, which the kernel picks per connection, so one client with calls in
    parallel (threads, or an AsyncClient's tasks) needs a few connections per
    worker to use them all. With 1, every call goes to one worker, over the
    connection gRPC shares between a process's channels of the same target and
    options.

    A target this client has never had an answer from (a wrong port, a server
    not started) is tried for about 2 s, then the call raises `UnavailableError`
    naming the target and the cause ("Connection refused"); with
    ``wait_for_ready=True`` calls wait for it for as long as their deadline
    allows instead (a client started before its server). Once a server has
    answered, the client expects it back: calls that end in UNAVAILABLE (a server
    draining, restarting, or a connection lost mid-answer) or in a CANCELLED this
    client did not ask for are tried again with exponential backoff (0.1 s
    doubling, at most 1 s, jittered) for as long as the call's deadline allows,
    so a drain and restart of the server loses no call. Every RPC is a pure
    function of its request, so this is always safe. `max_attempts` caps the
    attempts (1 turns retries off; None, the default, leaves only the deadline).
    No other status is retried, nor health checks; a streamed call is tried again
    only when it failed before any of its answers came back.

    Inputs above `stream_threshold_bytes` (default 8 MiB) travel as a stream of
    chunks of about `chunk_bytes` (default 2 MiB) and are reassembled here, so a
    tensor of any size fits under the message limit. This is transparent:
    elementwise functions split anywhere, softmax along another axis than its
    own, prelu along axis 0. A stream that breaks raises; no partial result is
    returned.

    Same host: with ``shared_memory=True`` and a local target (``localhost``, a
    loopback address or ``unix:``), inputs of at least `shared_memory_min_bytes`
    (default 64 KiB) are handed over in POSIX shared memory instead of the
    message, in one call whatever their size (no streaming); inputs over the
    server's element limit (asked once with `server_info`) go in messages,
    streamed. The server must run with ``--allow-shared-memory`` as the same
    user; when it refuses (or is too old), the call goes in messages and this
    client stops trying (logged once; `shared_memory` turns False). The client
    owns its segments (``/dev/shm/actgrad-*``, mode 0600): it reuses a few and
    unlinks all of them on `close()` or at exit. Results are copies, never views
    of a segment::

        with Client("localhost:50051", shared_memory=True) as client:
            y = client.activate(big, "silu")
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: ChannelOptions | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        wait_for_ready: bool = False,
        load_balancing: str | None = None,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
        connections: int = 1,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            options=options,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            max_attempts=max_attempts,
            wait_for_ready=wait_for_ready,
            load_balancing=load_balancing,
            stream_threshold_bytes=stream_threshold_bytes,
            chunk_bytes=chunk_bytes,
            shared_memory=shared_memory,
            shared_memory_min_bytes=shared_memory_min_bytes,
            connections=connections,
        )
        self._channels = [self._open_channel() for _ in range(self._connections)]
        self._stubs = [{} for _ in self._channels]

    def _open_channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self._target, options=self._channel_options)
        return grpc.secure_channel(self._target, self._credentials, options=self._channel_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel and unlinks the shared-memory segments; idempotent.

        ``with Client() as c:`` calls it for you.
        """
        if not self._closed:
            self._closed = True
            self._stop_sharing("")
            for channel in self._channels:
                channel.close()

    def _invoke(self, rpc: AnyRpc[ResultT], timeout: float | None) -> ResultT:
        return self._run(rpc, self._deadline(timeout))

    def _run(self, rpc: AnyRpc[ResultT], end: float) -> ResultT:
        if isinstance(rpc, NeedsCatalog | NeedsServerInfo):
            ask = self._prerequisite(rpc)
            if ask is not None:
                self._run(ask, end)
            return self._run(rpc.build(), end)
        if isinstance(rpc, StreamRpc):
            return self._invoke_stream(rpc, end)
        method = getattr(self._stub_in_turn(rpc.service), rpc.method)
        ready = self._waits_for_ready(rpc.service)
        attempt = 1
        begun = time.monotonic()
        try:
            while True:
                try:
                    response = method(rpc.request, **self._call_options(end, wait_for_ready=ready))
                except grpc.RpcError as exc:
                    self._answered(exc.code())
                    pause = self._retry_pause(rpc.service, exc.code(), attempt, begun, end)
                    if pause is None:
                        fallback = self._fallback(rpc, exc)
                        break
                    time.sleep(pause)
                    attempt += 1
                else:
                    self._answered(None)
                    return rpc.parse(response)
        finally:
            if rpc.release is not None:
                rpc.release()
        return self._run(fallback, end)

    def _invoke_stream(self, rpc: StreamRpc[ResultT], end: float) -> ResultT:
        ready = self._waits_for_ready("activation")
        attempt = 1
        begun = time.monotonic()
        while True:
            call = getattr(self._stub_in_turn("activation"), rpc.method)(
                rpc.requests(), **self._call_options(end, wait_for_ready=ready)
            )
            received = 0
            try:
                for response in call:
                    rpc.accept(received, response)
                    received += 1
            except grpc.RpcError as exc:
                self._answered(exc.code())
                # Tried again only while no answer came back: nothing was placed.
                pause = (
                    self._retry_pause("activation", exc.code(), attempt, begun, end)
                    if received == 0
                    else None
                )
                if pause is None:
                    raise self._error(exc) from exc
                time.sleep(pause)
                attempt += 1
                continue
            except BaseException:
                call.cancel()
                raise
            self._answered(None)
            return rpc.finish(received)

    def activate(
        self, x: Any, function: str, /, *, timeout: float | None = None, **params: Any
    ) -> npt.NDArray[Any]:
        """Applies `function` (name or alias) to `x` with keyword parameters.

        Parameters map by Python type: bool, int, float, str, or an array/list
        (converted to x's dtype, e.g. prelu's ``slope``)::

            y = client.activate(x, "gelu", approximate="tanh")
            y = client.activate(x, "prelu", slope=np.array([0.25]))
        """
        return self._invoke(self._activate_rpc(x, function, params), timeout)

    def gradient(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """Returns ``grad_output * f'(x)``, the gradient with respect to `x`.

        `grad_output` (default: ones) is converted to x's dtype and must have x's
        shape; use `vjp` for parameter gradients::

            dx = client.gradient(x, "leaky_relu", grad_output=g, alpha=0.1)
        """
        rpc = self._gradient_rpc(x, function, params, grad_output=grad_output, return_output=False)
        return self._invoke(rpc, timeout).grad_input

    def vjp(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        return_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> VjpResult:
        """Vector-Jacobian product with parameter gradients (and the forward value).

        Example::

            r = client.vjp(x, "prelu", slope=s, return_output=True)
            r.grad_input, r.grad_params["slope"], r.output
        """
        rpc = self._gradient_rpc(
            x, function, params, grad_output=grad_output, return_output=return_output
        )
        return self._invoke(rpc, timeout)

    def softmax(
        self,
        x: Any,
        /,
        *,
        axis: int = -1,
        temperature: float = 1.0,
        log: bool = False,
        timeout: float | None = None,
    ) -> npt.NDArray[Any]:
        """Softmax of ``x / temperature`` along `axis` (log-softmax with ``log=True``).

        Example::

            p = client.softmax(logits, axis=-1, temperature=0.7)
        """
        return self._invoke(
            self._softmax_rpc(x, axis=axis, temperature=temperature, log=log), timeout
        )

    def dense(
        self,
        x: Any,
        weight: Any,
        bias: Any = None,
        /,
        *,
        activation: str | None = DEFAULT_DENSE_ACTIVATION,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """A dense layer: ``activation(x . weight^T + bias)``, shape ``[..., out]``.

        `x` is ``[..., in]``, `weight` ``[out, in]``, `bias` ``[out]`` (None: no bias);
        `activation` (default relu) is any served function (softmax along the last
        axis) with its parameters as keywords, or None for the bare net output.
        float16 and bfloat16 are accumulated in float32. Example::

            y = client.dense(x, w, b, activation="leaky_relu", alpha=0.1)
        """
        return self._invoke(self._dense_rpc(x, weight, bias, activation, params), timeout)

    def dense_vjp(
        self,
        x: Any,
        weight: Any,
        bias: Any = None,
        /,
        *,
        activation: str | None = DEFAULT_DENSE_ACTIVATION,
        grad_output: Any = None,
        return_output: bool = False,
        return_net_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> DenseVjpResult:
        """Gradients of a dense layer with respect to x, weight, bias and tensor parameters.

        `grad_output` (``[..., out]``, default ones) is the upstream gradient; the
        output f(z) and the net output z come back when asked. Example::

            r = client.dense_vjp(x, w, b, activation="sigmoid", return_net_output=True)
            r.grad_input, r.grad_weight, r.grad_bias, r.net_output
        """
        rpc = self._dense_vjp_rpc(
            x,
            weight,
            bias,
            activation,
            params,
            grad_output=grad_output,
            return_output=return_output,
            return_net_output=return_net_output,
        )
        return self._invoke(rpc, timeout)

    def gradient_flow(
        self,
        function: str,
        /,
        *,
        depth: int = 30,
        width: int = 256,
        batch: int = 128,
        init: str = "xavier_normal",
        init_std: float | None = None,
        seed: int = 0,
        residual: bool = False,
        normalize: bool = False,
        dtype: str = "float64",
        timeout: float | None = None,
        **params: Any,
    ) -> GradientFlowResult:
        """How gradients survive a deep square network of `function` (see GradientFlowResult).

        The server draws W_1..W_depth (width x width, scheme `init`: xavier_normal,
        xavier_uniform, he_normal, he_uniform, lecun_normal, or normal with
        `init_std`), then x and the upstream gradient g (batch x width), all from
        ``numpy.random.default_rng(seed)``, and runs h_l = f(h_{l-1} . W_l^T) (with
        `normalize`, standardised over the batch first; with `residual`, plus h_{l-1})
        forward and backward. Example::

            r = client.gradient_flow("sigmoid", depth=30, init="xavier_normal")
            r.ratio  # about 1e-19: the gradient vanishes
        """
        rpc = self._gradient_flow_rpc(
            function,
            params,
            depth=depth,
            width=width,
            batch=batch,
            init=init,
            init_std=init_std,
            seed=seed,
            residual=residual,
            normalize=normalize,
            dtype=dtype,
        )
        return self._invoke(rpc, timeout)

    def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The server's function catalog.

        Example: ``[f.name for f in client.functions()]``.
        """
        return self._invoke(self._functions_rpc(), timeout)

    def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """The server's version, ONNX opset, execution providers and limits.

        Example: ``client.server_info().execution_providers``.
        """
        return self._invoke(self._server_info_rpc(), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status of `service` ("" = the whole server), e.g. ``"SERVING"``.

        ``"NOT_SERVING"`` while the server warms up or drains. Health needs no token.
        An unknown service raises `NotFoundError`; an unreachable server
        `UnavailableError` (health checks are not retried)::

            ready = client.health() == "SERVING"
        """
        return self._invoke(self._health_rpc(service), timeout)


class AsyncClient(_BaseClient):
    """asyncio client with the same methods as `Client`, awaitable.

    It may be created anywhere; its channel is opened on the first call, inside
    the running event loop, and stays bound to that loop (one client per loop)::

        async with AsyncClient("localhost:50051") as client:
            y = await client.activate(x, "silu")
            p = await client.softmax(logits, temperature=0.7)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: ChannelOptions | None = None,
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: str | None = None,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        wait_for_ready: bool = False,
        load_balancing: str | None = None,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        shared_memory: bool = False,
        shared_memory_min_bytes: int = DEFAULT_SHARED_MEMORY_MIN_BYTES,
        connections: int = 1,
    ) -> None:
        super().__init__(
            target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            options=options,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            max_attempts=max_attempts,
            wait_for_ready=wait_for_ready,
            load_balancing=load_balancing,
            stream_threshold_bytes=stream_threshold_bytes,
            chunk_bytes=chunk_bytes,
            shared_memory=shared_memory,
            shared_memory_min_bytes=shared_memory_min_bytes,
            connections=connections,
        )
        self._channels = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs = []

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel and unlinks the shared-memory segments; idempotent.

        ``async with`` calls it for you.
        """
        if not self._closed:
            self._closed = True
            self._stop_sharing("")
            for channel in self._channels:
                await channel.close(grace=None)

    def _connected_stub(self, service: str) -> Any:
        # grpc.aio binds a channel to the loop it is created in; made in __init__
        # outside a running loop, it would hang on another loop than asyncio.run's.
        loop = asyncio.get_running_loop()
        if not self._channels:
            self._channels = [self._open_channel() for _ in range(self._connections)]
            self._stubs = [{} for _ in self._channels]
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "this AsyncClient is bound to the event loop of its first call; "
                "create one client per event loop"
            )
        return self._stub_in_turn(service)

    def _open_channel(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._target, options=self._channel_options)
        return grpc.aio.secure_channel(
            self._target, self._credentials, options=self._channel_options
        )

    async def _invoke(self, rpc: AnyRpc[ResultT], timeout: float | None) -> ResultT:
        return await self._run(rpc, self._deadline(timeout))

    async def _run(self, rpc: AnyRpc[ResultT], end: float) -> ResultT:
        if isinstance(rpc, NeedsCatalog | NeedsServerInfo):
            ask = self._prerequisite(rpc)
            if ask is not None:
                await self._run(ask, end)
            return await self._run(rpc.build(), end)
        if isinstance(rpc, StreamRpc):
            return await self._invoke_stream(rpc, end)
        stub = self._connected_stub(rpc.service)
        method = getattr(stub, rpc.method)
        ready = self._waits_for_ready(rpc.service)
        attempt = 1
        begun = time.monotonic()
        try:
            while True:
                try:
                    response = await method(
                        rpc.request, **self._call_options(end, wait_for_ready=ready)
                    )
                except grpc.RpcError as exc:
                    self._answered(exc.code())
                    pause = self._retry_pause(rpc.service, exc.code(), attempt, begun, end)
                    if pause is None:
                        fallback = self._fallback(rpc, exc)
                        break
                    await asyncio.sleep(pause)
                    attempt += 1
                else:
                    self._answered(None)
                    return rpc.parse(response)
        finally:
            if rpc.release is not None:
                rpc.release()
        return await self._run(fallback, end)

    async def _invoke_stream(self, rpc: StreamRpc[ResultT], end: float) -> ResultT:
        ready = self._waits_for_ready("activation")
        attempt = 1
        begun = time.monotonic()
        while True:
            stub = self._connected_stub("activation")
            call = getattr(stub, rpc.method)(
                rpc.requests(), **self._call_options(end, wait_for_ready=ready)
            )
            received = 0
            try:
                async for response in call:
                    rpc.accept(received, response)
                    received += 1
            except grpc.RpcError as exc:
                code = exc.code()
                if received == 0 and _refused_while_sending(exc):
                    code = grpc.StatusCode.UNAVAILABLE
                self._answered(code)
                # Tried again only while no answer came back: nothing was placed.
                pause = (
                    self._retry_pause("activation", code, attempt, begun, end)
                    if received == 0
                    else None
                )
                if pause is None:
                    if code is not exc.code():
                        raise UnavailableError(
                            "the server ended the stream before reading it (draining?)"
                        ) from exc
                    raise self._error(exc) from exc
                await asyncio.sleep(pause)
                attempt += 1
                continue
            except BaseException:
                call.cancel()
                raise
            self._answered(None)
            return rpc.finish(received)

    async def activate(
        self, x: Any, function: str, /, *, timeout: float | None = None, **params: Any
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.activate`: ``y = await client.activate(x, "gelu")``."""
        return await self._invoke(self._activate_rpc(x, function, params), timeout)

    async def gradient(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.gradient`: ``dx = await client.gradient(x, "tanh", grad_output=g)``."""
        rpc = self._gradient_rpc(x, function, params, grad_output=grad_output, return_output=False)
        return (await self._invoke(rpc, timeout)).grad_input

    async def vjp(
        self,
        x: Any,
        function: str,
        /,
        *,
        grad_output: Any = None,
        return_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> VjpResult:
        """Awaitable `Client.vjp`: ``r = await client.vjp(x, "prelu", slope=s)``."""
        rpc = self._gradient_rpc(
            x, function, params, grad_output=grad_output, return_output=return_output
        )
        return await self._invoke(rpc, timeout)

    async def softmax(
        self,
        x: Any,
        /,
        *,
        axis: int = -1,
        temperature: float = 1.0,
        log: bool = False,
        timeout: float | None = None,
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.softmax`: ``p = await client.softmax(logits, axis=0)``."""
        return await self._invoke(
            self._softmax_rpc(x, axis=axis, temperature=temperature, log=log), timeout
        )

    async def dense(
        self,
        x: Any,
        weight: Any,
        bias: Any = None,
        /,
        *,
        activation: str | None = DEFAULT_DENSE_ACTIVATION,
        timeout: float | None = None,
        **params: Any,
    ) -> npt.NDArray[Any]:
        """Awaitable `Client.dense`: ``y = await client.dense(x, w, b, activation="tanh")``."""
        return await self._invoke(self._dense_rpc(x, weight, bias, activation, params), timeout)

    async def dense_vjp(
        self,
        x: Any,
        weight: Any,
        bias: Any = None,
        /,
        *,
        activation: str | None = DEFAULT_DENSE_ACTIVATION,
        grad_output: Any = None,
        return_output: bool = False,
        return_net_output: bool = False,
        timeout: float | None = None,
        **params: Any,
    ) -> DenseVjpResult:
        """Awaitable `Client.dense_vjp`: ``r = await client.dense_vjp(x, w, activation=None)``."""
        rpc = self._dense_vjp_rpc(
            x,
            weight,
            bias,
            activation,
            params,
            grad_output=grad_output,
            return_output=return_output,
            return_net_output=return_net_output,
        )
        return await self._invoke(rpc, timeout)

    async def gradient_flow(
        self,
        function: str,
        /,
        *,
        depth: int = 30,
        width: int = 256,
        batch: int = 128,
        init: str = "xavier_normal",
        init_std: float | None = None,
        seed: int = 0,
        residual: bool = False,
        normalize: bool = False,
        dtype: str = "float64",
        timeout: float | None = None,
        **params: Any,
    ) -> GradientFlowResult:
        """Awaitable `Client.gradient_flow`: ``r = await client.gradient_flow("tanh")``."""
        rpc = self._gradient_flow_rpc(
            function,
            params,
            depth=depth,
            width=width,
            batch=batch,
            init=init,
            init_std=init_std,
            seed=seed,
            residual=residual,
            normalize=normalize,
            dtype=dtype,
        )
        return await self._invoke(rpc, timeout)

    async def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """Awaitable `Client.functions`: ``fs = await client.functions()``."""
        return await self._invoke(self._functions_rpc(), timeout)

    async def server_info(self, *, timeout: float | None = None) -> ServerInfo:
        """Awaitable `Client.server_info`: ``info = await client.server_info()``."""
        return await self._invoke(self._server_info_rpc(), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """Awaitable `Client.health`: ``ready = await client.health() == "SERVING"``."""
        return await self._invoke(self._health_rpc(service), timeout)
