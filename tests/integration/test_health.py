"""grpc.health.v1 (Check, Watch), `actgrad health`, and server reflection."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
import pytest
from _running import SlowEngine, make_client, running, settings
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import actgrad
from actgrad import cli
from actgrad_server.app import ActgradServer
from actgrad_server.engine import Engine
from actgrad_server.health import LIVENESS

SERVICE = "actgrad.v1.ActivationService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _HeldWarmUp(Engine):
    """Warm-up waits for `release`, so the server stays in its warming-up state."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.release = threading.Event()
        self.started = threading.Event()

    def warm_up(self, dtypes: Any = ("float32",)) -> None:
        self.started.set()
        if not self.release.wait(timeout=60):
            raise RuntimeError("warm-up never released")
        super().warm_up(dtypes)


@pytest.mark.parametrize("service", ["", SERVICE])
def test_serving_after_start_for_both_names(client: Any, service: str) -> None:
    assert client.health(service) == "SERVING"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_health_answers_while_every_call_thread_is_busy(kind: str) -> None:
    """Health runs on a pool of its own: a probe does not wait behind the work (here
    two calls held in the engine on the server's two threads and two more queued)."""
    engine = SlowEngine()
    config = settings(threads=2, max_concurrent_rpcs=8)
    x = [1.0, -1.0]
    with running(config, engine=engine) as server, futures.ThreadPoolExecutor(4) as pool:
        target = f"127.0.0.1:{server.port}"

        def activate() -> Any:
            with actgrad.Client(target, timeout=60.0) as held:
                return held.activate(x, "relu")

        calls = [pool.submit(activate) for _ in range(4)]
        engine.wait_entered(config.threads)
        client = make_client(kind, target, timeout=5.0)
        try:
            for service in ("", LIVENESS):
                assert client.health(service) == "SERVING"
            channel = grpc.insecure_channel(target)
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=5.0
            )
            assert next(watch).status == SERVING
            watch.cancel()
            channel.close()
            assert engine.entered == config.threads and not any(c.done() for c in calls)
        finally:
            engine.release.set()
            client.close()
        assert [c.result(60).tolist() for c in calls] == [[1.0, 0.0]] * 4


def test_unknown_service_is_not_found(client: Any) -> None:
    with pytest.raises(actgrad.NotFoundError) as info:
        client.health("no.such.Service")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_not_serving_until_warm_then_serving_then_not_serving_on_drain() -> None:
    engine = _HeldWarmUp()
    server = ActgradServer(settings(grace=60.0), engine=engine)
    starter = threading.Thread(target=server.start)
    starter.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert engine.started.wait(30)
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == NOT_SERVING
        # Alive all along: the liveness name answers SERVING through warm-up and drain.
        liveness = health_pb2.HealthCheckRequest(service=LIVENESS)
        assert stub.Check(liveness, timeout=10).status == SERVING
        # A CLI health check fails while warming up.
        assert cli.main(["health", "--target", f"127.0.0.1:{server.port}"]) == 1
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=60)
        assert next(watch).status == NOT_SERVING
        engine.release.set()
        assert next(watch).status == SERVING
        starter.join(30)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING

        done = server.stop()  # the settings' grace: 60 s
        assert next(watch).status == NOT_SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == NOT_SERVING
        assert stub.Check(liveness, timeout=10).status == SERVING
        # The drain ends the Watch stream (OK) instead of waiting the grace for it.
        assert list(watch) == []
        assert watch.code() == grpc.StatusCode.OK
        assert done.wait(30), "the open Watch stream held the drain"
    finally:
        engine.release.set()
        channel.close()
        server.stop(0)
        starter.join(30)
        server.wait()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_health_method_of_both_clients_on_a_warming_server(kind: str) -> None:
    engine = _HeldWarmUp()
    server = ActgradServer(settings(), engine=engine)
    starter = threading.Thread(target=server.start)
    starter.start()
    client = make_client(kind, f"127.0.0.1:{server.port}", timeout=10.0)
    try:
        assert engine.started.wait(30)
        assert client.health() == "NOT_SERVING"
        engine.release.set()
        starter.join(30)
        assert client.health(SERVICE) == "SERVING"
    finally:
        engine.release.set()
        client.close()
        server.stop(0)
        starter.join(30)
        server.wait()


def test_health_command_exit_status(
    server: ActgradServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["health", "--target", f"127.0.0.1:{server.port}", "--timeout", "10"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    target = f"127.0.0.1:{server.port}"
    assert cli.main(["health", "--target", target, "--service", SERVICE]) == 0
    assert cli.main(["health", "--target", target, "--service", "nope.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    # Nothing listens on port 1: UNAVAILABLE, exit 1 (health checks are not retried).
    assert cli.main(["health", "--target", "127.0.0.1:1", "--timeout", "5"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_health_command_as_a_process(server: ActgradServer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "actgrad", "health", "--target", f"127.0.0.1:{server.port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, "SERVING")


# -- reflection ----------------------------------------------------------------------


def test_reflection_lists_services_and_describes_the_api(server: ActgradServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE, "grpc.health.v1.Health"} <= services
        assert set(server.services) <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        methods = {m.name for m in service.methods}
        assert {"Activate", "Gradient", "Softmax", "ListFunctions", "GetServerInfo"} <= methods
        activate = service.FindMethodByName("Activate")
        assert activate.input_type.full_name == "actgrad.v1.ActivateRequest"
        tensor = pool.FindMessageTypeByName("actgrad.v1.Tensor")
        assert {"dtype", "shape", "data"} <= set(tensor.fields_by_name)
        # The Open Inference Protocol, whose stubs live in a private pool, too.
        oip = pool.FindServiceByName("inference.GRPCInferenceService")
        infer = oip.FindMethodByName("ModelInfer")
        assert infer.input_type.full_name == "inference.ModelInferRequest"
        assert "raw_input_contents" in infer.input_type.fields_by_name


def test_no_reflection_turns_it_off() -> None:
    with (
        running(settings(reflection=False)) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Health is still there.
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert answer.status == SERVING
