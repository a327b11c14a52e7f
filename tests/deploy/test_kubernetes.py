"""deploy/k8s and deploy/kserve, checked without a cluster.

- Every Kustomize overlay (and the TLS component on top of the CPU overlay) renders
  with `kubectl kustomize`, and every rendered object validates strictly (unknown
  fields are errors) against the Kubernetes JSON schemas that the PyPI package
  kubernetes-validate bundles, for the oldest version the manifests need (1.27:
  native gRPC probes are GA there) and for the newest it bundles.
- The KServe InferenceService validates against the v1beta1 openAPIV3Schema of
  KServe's CRD, `kserve-inferenceservice-v1beta1.json` beside this file: KServe
  v0.20.0's `config/crd/full/serving.kserve.io_inferenceservices.yaml`, with only
  `spec.predictor` kept under `spec` (everything kept is verbatim). An object whose
  properties are declared is checked as closed, as the API server's strict field
  validation (kubectl's default) does.
- What the manifests promise (hardening, Guaranteed resources, the preStop pause
  and the grace ordering, workers matched to the CPU limit, settings only from
  ACTGRAD_* variables that exist, the GPU overlay and what it scales on, topology
  spread, Services, the autoscaler, the disruption budget, the network policy, the
  optional ServiceMonitor component).
- The probes, for real: `actgrad serve` started with exactly the rendered
  Deployment's environment (addresses swapped for loopback and free ports), each
  probe run as the kubelet would during the warm-up, while serving, and during the
  drain that SIGTERM starts, with a gRPC stream held open by the test.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml
from deploy_support import DOCKER, REPO
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actgrad import Client
from actgrad.v1 import activation_pb2, activation_pb2_grpc
from actgrad.wire import encode
from actgrad_server import config
from actgrad_server.engine import CacheInfo
from actgrad_server.health import LIVENESS
from actgrad_server.metrics import ServerMetrics

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
TLS_COMPONENT = K8S / "components" / "tls"
SERVICE_MONITOR_COMPONENT = K8S / "components" / "servicemonitor"
# Who the NetworkPolicy admits: labelled clients (gRPC, HTTP) and Prometheus (/metrics).
CLIENT_LABEL = {"actgrad.io/client": "true"}
SCRAPER_LABEL = {"app.kubernetes.io/name": "prometheus"}
INFERENCE_SERVICE = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
KSERVE_SCHEMA = Path(__file__).parent / "kserve-inferenceservice-v1beta1.json"
# The oldest Kubernetes the manifests need (gRPC probes GA), and the newest bundled.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
SETTINGS_VARIABLES = {"ACTGRAD_" + f.name.upper() for f in dataclasses.fields(config.Settings)}
IMAGE_USER = 10001  # docker/Dockerfile's USER
IMAGES = {"cpu": "actgrad:0.1.0", "gpu": "actgrad:0.1.0-cuda"}
KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
}


# -- rendering ------------------------------------------------------------------------


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "kubectl is not installed: these tests render deploy/k8s with "
            "`kubectl kustomize` (kubectl 1.27+ bundles kustomize)"
        )
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY`, as the list of objects it prints."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o is not None]
    assert objects, f"{directory} rendered nothing"
    return objects


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(found) == len(objects), "two objects of one kind share a name"
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def render_with_component(directory: Path, component: Path) -> list[dict[str, Any]]:
    """The CPU overlay with `component`, as docs/kubernetes.md says to add it.

    Kustomize takes relative paths only, so the kustomization names both by a path
    relative to its own (temporary) directory.
    """
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "cpu", directory)],
                "components": [os.path.relpath(component, directory)],
            }
        )
    )
    return render(directory)


@pytest.fixture(scope="module")
def rendered_tls(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_component(tmp_path_factory.mktemp("k8s-tls"), TLS_COMPONENT)


@pytest.fixture(scope="module")
def rendered_monitor(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render_with_component(tmp_path_factory.mktemp("k8s-monitor"), SERVICE_MONITOR_COMPONENT)


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(objects)["Deployment", "actgrad"]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["actgrad"]
    return dict(containers[0])


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """A container's env as a dict; plain values only (no valueFrom, no envFrom)."""
    assert "envFrom" not in spec
    names = [item["name"] for item in spec["env"]]
    assert len(names) == len(set(names)), f"duplicate variables: {names}"
    assert all(set(item) == {"name", "value"} for item in spec["env"]), spec["env"]
    return {item["name"]: item["value"] for item in spec["env"]}


def quantity(value: str | int) -> float:
    """A CPU or memory quantity ("500m", "2", "2Gi") as a number."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# -- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    objects = rendered[overlay]
    assert {o["kind"] for o in objects} == KINDS
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_tls_component_renders_and_validates_strictly(
    rendered_tls: list[dict[str, Any]], version: str
) -> None:
    for obj in rendered_tls:
        kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_an_unknown_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    broken = copy.deepcopy(deployment(rendered["cpu"]))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["gRPC"] = probe.pop("grpc")  # a typo the API server would refuse
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def _closed(schema: Any) -> Any:
    """The CRD schema with every object of declared properties closed to others."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@pytest.fixture(scope="module")
def kserve_validator() -> jsonschema.protocols.Validator:
    schema = _closed(json.loads(KSERVE_SCHEMA.read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def inference_service() -> dict[str, Any]:
    loaded = yaml.safe_load(INFERENCE_SERVICE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_inference_service_validates_against_the_kserve_crd(
    kserve_validator: jsonschema.protocols.Validator, inference_service: dict[str, Any]
) -> None:
    kserve_validator.validate(inference_service)
    broken = copy.deepcopy(inference_service)
    broken["spec"]["predictor"]["containers"][0]["port"] = 50051
    assert not kserve_validator.is_valid(broken)


def test_inference_service_is_a_custom_grpc_predictor(
    inference_service: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    assert inference_service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert inference_service["kind"] == "InferenceService"
    predictor = inference_service["spec"]["predictor"]
    # A custom predictor: containers, no model format for KServe's runtimes.
    assert "model" not in predictor
    (spec,) = predictor["containers"]
    assert spec["name"] == "kserve-container"
    assert "command" not in spec and "args" not in spec
    # One port, named h2c: KServe/Knative proxy HTTP/2 cleartext (gRPC) to it.
    assert spec["ports"] == [{"containerPort": 50051, "name": "h2c", "protocol": "TCP"}]
    # The same image and settings as the CPU Deployment.
    cpu = container(rendered["cpu"])
    assert spec["image"] == cpu["image"]
    assert environment(spec) == environment(cpu)
    assert spec["resources"] == cpu["resources"]
    assert spec["securityContext"] == cpu["securityContext"]
    assert spec["volumeMounts"] == cpu["volumeMounts"]
    pod = deployment(rendered["cpu"])["spec"]["template"]["spec"]
    assert predictor["volumes"] == pod["volumes"]
    assert predictor["automountServiceAccountToken"] is False


# -- what the manifests promise -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    pod = deployment(objects)["spec"]["template"]["spec"]
    account = by_kind(objects)["ServiceAccount", pod["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    assert pod["automountServiceAccountToken"] is False
    for context in (pod["securityContext"], container(objects)["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == IMAGE_USER
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    spec = container(objects)
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The read-only root needs a writable /tmp (the metrics' multiprocess files).
    (mount,) = (m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    # The numeric user is the one the images run as.
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        assert f"USER {IMAGE_USER}:{IMAGE_USER}" in (DOCKER / dockerfile).read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_runs_the_image_with_settings_only_from_the_environment(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    spec = container(objects)
    assert spec["image"] == IMAGES[overlay]
    # The image's ENTRYPOINT (`actgrad serve`, plus `--device cuda` in the CUDA image).
    assert "command" not in spec and "args" not in spec
    env = environment(spec)
    assert set(env) <= SETTINGS_VARIABLES, set(env) - SETTINGS_VARIABLES
    settings = config.load(environ=env)
    assert (settings.host, settings.port) == ("0.0.0.0", 50051)
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 9090)
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {
        "grpc": settings.port,
        "http": settings.http_port,
        "metrics": settings.metrics_port,
    }

    pod = deployment(objects)["spec"]["template"]["spec"]
    limits = spec["resources"]["limits"]
    assert quantity(limits["cpu"]) == 2
    if overlay == "cpu":
        assert quantity(limits["memory"]) == 2 * 2**30
        assert settings.device == "cpu"
        # One server process per CPU of the limit.
        assert settings.workers == quantity(limits["cpu"])
    else:
        assert settings.device == "cuda" and settings.workers == 1
        assert limits["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        assert 'ENTRYPOINT ["actgrad", "serve", "--device", "cuda"]' in (
            (DOCKER / "Dockerfile.cuda").read_text()
        )

    annotations = deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    spec = container(rendered[overlay])
    port = int(environment(spec)["ACTGRAD_PORT"])
    for name in ("startupProbe", "readinessProbe"):
        # The kubelet's own gRPC health check of the whole server (service "").
        assert spec[name]["grpc"] == {"port": port}, name
    # Not the whole server's health, which is NOT_SERVING during a drain, but the
    # name that stays SERVING while the process answers.
    assert spec["livenessProbe"]["grpc"] == {"port": port, "service": LIVENESS}
    assert set(spec["livenessProbe"]) & {"tcpSocket", "exec", "httpGet"} == set()
    startup = spec["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_tls_component_probes_with_the_ca(rendered_tls: list[dict[str, Any]]) -> None:
    spec = container(rendered_tls)
    env = environment(spec)
    assert set(env) <= SETTINGS_VARIABLES
    mount = next(m for m in spec["volumeMounts"] if m["name"] == "tls")
    assert env["ACTGRAD_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["ACTGRAD_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    for name in ("startupProbe", "readinessProbe"):
        argv = spec[name]["exec"]["command"]
        assert set(spec[name]) & {"grpc", "tcpSocket", "httpGet"} == set()
        assert argv[:2] == ["actgrad", "health"]
        assert argv[argv.index("--target") + 1] == f"localhost:{env['ACTGRAD_PORT']}"
        assert argv[argv.index("--ca-file") + 1] == f"{mount['mountPath']}/ca.crt"
        assert spec[name]["timeoutSeconds"] > float(argv[argv.index("--timeout") + 1])
    assert spec["livenessProbe"]["tcpSocket"] == {"port": int(env["ACTGRAD_PORT"])}
    pod = deployment(rendered_tls)["spec"]["template"]["spec"]
    # The Secret's files (mode 0440) are readable by the server's group.
    assert pod["securityContext"]["fsGroup"] == IMAGE_USER
    (volume,) = (v for v in pod["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "actgrad-tls"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_autoscaler_budget_and_policy_select_the_pods(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = by_kind(rendered[overlay])
    deploy = objects["Deployment", "actgrad"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The autoscaler owns the replica count.
    assert "replicas" not in deploy["spec"]
    ports = {p["name"]: p["containerPort"] for p in container(rendered[overlay])["ports"]}

    service = objects["Service", "actgrad"]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["ports"]} == ports
    headless = objects["Service", "actgrad-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"].items() <= labels.items()
    assert [p["port"] for p in headless["ports"]] == [ports["grpc"]]
    assert headless.get("publishNotReadyAddresses", False) is False
    for spec in (service, headless):
        grpc_port = next(p for p in spec["ports"] if p["name"] == "grpc")
        assert grpc_port["targetPort"] == "grpc"
        assert grpc_port["appProtocol"] == "kubernetes.io/h2c"

    autoscaler = objects["HorizontalPodAutoscaler", "actgrad"]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "actgrad")
    assert autoscaler["spec"]["minReplicas"] >= 2

    budget = objects["PodDisruptionBudget", "actgrad"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1

    policy = objects["NetworkPolicy", "actgrad"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_guaranteed(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """Requests equal to limits for every resource, in whole CPUs: Guaranteed QoS.

    The pod is never throttled below the CPUs its workers run on, gets exclusive
    cores under the kubelet's static CPU manager, and is evicted last.
    """
    resources = container(rendered[overlay])["resources"]
    assert resources["requests"] == resources["limits"], resources
    assert set(resources["limits"]) >= {"cpu", "memory"}
    assert quantity(resources["limits"]["cpu"]).is_integer()


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # all the manifests use
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _admitted(policy: dict[str, Any], client: dict[str, str], port: int) -> bool:
    """Whether a pod with labels `client`, in any namespace, reaches `port` over TCP."""
    for rule in policy.get("ingress", []):
        if (port, "TCP") not in {(p["port"], p["protocol"]) for p in rule["ports"]}:
            continue
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            assert peer["namespaceSelector"] == {}  # any namespace
            if _matches(peer["podSelector"], client):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_clients_and_the_scraper(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = by_kind(rendered[overlay])
    policy = objects["NetworkPolicy", "actgrad"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # Every ingress rule names its peers: none admits every pod.
    assert all(rule.get("from") for rule in policy["ingress"]), policy["ingress"]
    ports = {p["name"]: p["containerPort"] for p in container(rendered[overlay])["ports"]}
    stranger = {"app.kubernetes.io/name": "something-else"}
    for name in ("grpc", "http"):
        assert _admitted(policy, CLIENT_LABEL, ports[name]), name
        assert not _admitted(policy, SCRAPER_LABEL, ports[name]), name
        assert not _admitted(policy, stranger, ports[name]), name
    assert _admitted(policy, SCRAPER_LABEL, ports["metrics"])
    assert not _admitted(policy, CLIENT_LABEL, ports["metrics"])
    assert not _admitted(policy, stranger, ports["metrics"])
    # Egress: DNS only (to any address: the cluster's DNS or a node-local cache).
    (egress,) = policy["egress"]
    assert "to" not in egress
    assert {(p["port"], p["protocol"]) for p in egress["ports"]} == {(53, "UDP"), (53, "TCP")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_spread_over_nodes_and_zones(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    template = deployment(rendered[overlay])["spec"]["template"]
    constraints = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in constraints.values():
        assert constraint["maxSkew"] == 1
        # A preference: a hard rule would leave the autoscaler's pods Pending when a
        # zone or node is full (docs/kubernetes.md says why).
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert _matches(constraint["labelSelector"], template["metadata"]["labels"])
        # Tainted nodes the pods cannot use are no empty domains to spread over.
        assert constraint["nodeTaintsPolicy"] == "Honor"
        # Spread each rolling update's new ReplicaSet on its own.
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pre_stop_pause_then_drain_within_the_grace_period(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    spec = container(rendered[overlay])
    settings = config.load(environ=environment(spec))
    # An exec of the image's coreutils `sleep`, not `lifecycle.preStop.sleep`,
    # which needs Kubernetes 1.30 (the 1.27 schema refuses it: below).
    command = spec["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pause = float(command[1])
    assert 3 <= pause <= 15
    pod = deployment(rendered[overlay])["spec"]["template"]["spec"]
    # The kubelet's SIGKILL comes after terminationGracePeriodSeconds, counted from
    # the start of preStop: after the pause, the drain and its 5 s bound, plus margin.
    assert pod["terminationGracePeriodSeconds"] >= pause + settings.grace + 5 + 5
    sleeping = copy.deepcopy(deployment(rendered[overlay]))
    handler = sleeping["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    handler.clear()
    handler["sleep"] = {"seconds": int(pause)}
    kubernetes_validate.validate(sleeping, "1.30.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sleeping, K8S_VERSIONS[0], strict=True)


def test_autoscalers_scale_on_what_loads_the_device(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    cpu = by_kind(rendered["cpu"])["HorizontalPodAutoscaler", "actgrad"]["spec"]
    assert [(m["type"], m["resource"]["name"]) for m in cpu["metrics"]] == [("Resource", "cpu")]
    gpu = by_kind(rendered["gpu"])["HorizontalPodAutoscaler", "actgrad"]["spec"]
    first, *rest = gpu["metrics"]
    # On a GPU: calls in flight per pod, the server's own gauge (as /metrics names it).
    assert first["type"] == "Pods"
    name = first["pods"]["metric"]["name"]
    metrics = ServerMetrics(lambda: CacheInfo(size=0, capacity=0, builds=0))
    assert name == metrics.in_flight._name
    threads = config.load(environ=environment(container(rendered["gpu"]))).threads
    assert first["pods"]["target"] == {"type": "AverageValue", "averageValue": str(threads)}
    assert [(m["type"], m["resource"]["name"]) for m in rest] == [("Resource", "cpu")]


# What the manifests use of the Prometheus Operator's ServiceMonitor (v1), closed:
# the field names and types of its CRD (monitoring.coreos.com_servicemonitors.yaml).
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor_is_optional(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        assert "ServiceMonitor" not in {o["kind"] for o in rendered[overlay]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_service_monitor_component_renders_and_validates(
    rendered_monitor: list[dict[str, Any]], version: str
) -> None:
    monitors = [o for o in rendered_monitor if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).validate(monitors[0])
    for obj in rendered_monitor:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, version, strict=True)


def test_service_monitor_scrapes_each_pod_once_where_the_annotations_say(
    rendered_monitor: list[dict[str, Any]],
) -> None:
    objects = by_kind(rendered_monitor)
    monitor = objects["ServiceMonitor", "actgrad"]["spec"]
    (endpoint,) = monitor["endpoints"]
    # The Services it selects, by label; the endpoint's port is named in one only,
    # so each pod is one target (the headless Service has no metrics port).
    services = [
        o["spec"]
        for (kind, _), o in objects.items()
        if kind == "Service" and _matches(monitor["selector"], o["metadata"]["labels"])
    ]
    with_port = [s for s in services if endpoint["port"] in {p["name"] for p in s["ports"]}]
    assert len(with_port) == 1
    (port,) = (p for p in with_port[0]["ports"] if p["name"] == endpoint["port"])
    annotations = deployment(rendered_monitor)["spec"]["template"]["metadata"]["annotations"]
    assert str(port["port"]) == annotations["prometheus.io/port"]
    assert endpoint["path"] == annotations["prometheus.io/path"]
    # The NetworkPolicy admits the Prometheus Operator's pods to that port.
    policy = objects["NetworkPolicy", "actgrad"]["spec"]
    assert _admitted(policy, SCRAPER_LABEL, port["port"])


# -- the probes, run as the kubelet runs them -------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grpc_probe(port: int, timeout: float, service: str = "") -> str:
    """The kubelet's gRPC probe: Check(service) within timeoutSeconds.

    Returns the status name (the probe passes on SERVING only) or the error code.
    """
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


@dataclasses.dataclass
class Pod:
    """`actgrad serve` with a rendered container's environment; stderr collected."""

    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    lines: list[str] = dataclasses.field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def pod(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> Iterator[Pod]:
    env = environment(container(rendered["cpu"]))
    port, metrics_port = _free_port(), _free_port()
    # What a docker test's `-e` would change: loopback addresses and free ports (the
    # HTTP port too: a fixed 8000 failed here while another server held it).
    env.update(
        ACTGRAD_HOST="127.0.0.1",
        ACTGRAD_PORT=str(port),
        ACTGRAD_HTTP_PORT=str(_free_port()),
        ACTGRAD_METRICS_HOST="127.0.0.1",
        ACTGRAD_METRICS_PORT=str(metrics_port),
    )
    # The pod's environment is the image's (PATH, Python) plus exactly these.
    base = {key: value for key, value in os.environ.items() if not key.startswith("ACTGRAD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "actgrad", "serve"],
        stderr=subprocess.PIPE,
        text=True,
        env={**base, **env},
        cwd=tmp_path,  # the image's WORKDIR is /tmp, the emptyDir
    )
    started = Pod(proc, port, metrics_port)
    reader = threading.Thread(target=started.read, name="pod-stderr", daemon=True)
    reader.start()
    try:
        yield started
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()


def _gradient_chunk(seed: int) -> activation_pb2.GradientRequest:
    x = np.random.default_rng(seed).standard_normal(4096).astype(np.float32)
    return activation_pb2.GradientRequest(function="sigmoid", input=encode(x))


def test_probes_through_warm_up_serving_and_drain(
    rendered: dict[str, list[dict[str, Any]]], pod: Pod
) -> None:
    spec = container(rendered["cpu"])
    startup, readiness, liveness = (
        spec["startupProbe"],
        spec["readinessProbe"],
        spec["livenessProbe"],
    )
    grace = float(environment(spec)["ACTGRAD_GRACE"])

    # Warm-up: the startup probe fails (nothing listens yet, then NOT_SERVING) until
    # the server is warm; the kubelet gives it periodSeconds * failureThreshold.
    before: list[str] = []
    deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
    while True:
        status = grpc_probe(pod.port, startup["timeoutSeconds"])
        if status == "SERVING":
            break
        before.append(status)
        if status == "NOT_SERVING":
            # Listening while warming up: the liveness probe already passes.
            assert grpc_probe(pod.port, liveness["timeoutSeconds"], LIVENESS) == "SERVING"
        assert pod.proc.poll() is None, pod.log
        assert time.monotonic() < deadline, f"never SERVING: {before[-5:]}\n{pod.log}"
        time.sleep(0.05)
    assert set(before) <= {"UNAVAILABLE", "NOT_SERVING", "DEADLINE_EXCEEDED"}, set(before)
    assert "NOT_SERVING" in before, "the warm-up was never seen"

    # Serving. With workers, a probe answers for the worker its connection reached, so
    # right after the first SERVING another worker may still say NOT_SERVING while it
    # warms up (docs/kubernetes.md; the kubelet's readiness probe just tries again).
    # The supervisor's actgrad_serving, on /metrics where the annotations say, is 1
    # once every worker is warm, and from then on every probe passes and calls work.
    annotations = deployment(rendered["cpu"])["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == environment(spec)["ACTGRAD_METRICS_PORT"]
    url = f"http://127.0.0.1:{pod.metrics_port}{annotations['prometheus.io/path']}"
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(url, timeout=10) as answer:
            if "\nactgrad_serving 1.0\n" in answer.read().decode():
                break
        assert time.monotonic() < deadline, pod.log
        time.sleep(0.1)
    for _ in range(6):  # each probe on a new connection, to whichever worker
        assert grpc_probe(pod.port, readiness["timeoutSeconds"]) == "SERVING"
        assert grpc_probe(pod.port, liveness["timeoutSeconds"], LIVENESS) == "SERVING"
    target = f"127.0.0.1:{pod.port}"
    with Client(target, timeout=30.0) as client:
        np.testing.assert_allclose(client.activate([0.0], "sigmoid"), [0.5])

    # A call in flight: a gradient stream whose second chunk the test holds back.
    release = threading.Event()

    def chunks() -> Iterator[activation_pb2.GradientRequest]:
        yield _gradient_chunk(1)
        release.wait(grace)
        yield _gradient_chunk(2)

    channel = grpc.insecure_channel(target)
    try:
        responses = activation_pb2_grpc.ActivationServiceStub(channel).GradientStream(
            chunks(), timeout=grace + 30
        )
        assert next(responses).grad_input.shape == [4096]

        pod.proc.send_signal(signal.SIGTERM)
        # The drain: readiness turns NOT_SERVING for good (the pod leaves the
        # endpoints) while the liveness probe keeps passing (no restart mid-drain).
        readiness_seen: list[str] = []
        liveness_seen: list[bool] = []
        end = time.monotonic() + 5.0
        while time.monotonic() < end:
            readiness_seen.append(grpc_probe(pod.port, readiness["timeoutSeconds"]))
            liveness_seen.append(
                grpc_probe(pod.port, liveness["timeoutSeconds"], LIVENESS) == "SERVING"
            )
            assert pod.proc.poll() is None, pod.log
            time.sleep(0.1)
        # A worker without calls closes its listener within a second or two of the
        # signal; a probe may meet that moment once. The kubelet needs
        # failureThreshold failures in a row, periodSeconds apart.
        assert "SERVING" not in readiness_seen[5:], readiness_seen
        assert readiness_seen[-10:] == ["NOT_SERVING"] * 10, readiness_seen
        assert liveness_seen[-20:] == [True] * 20, liveness_seen
        assert liveness_seen.count(False) < liveness["failureThreshold"], liveness_seen

        # The call in flight finishes with its results, then the process exits 0.
        release.set()
        assert next(responses).grad_input.shape == [4096]
        assert list(responses) == []
        assert responses.code() == grpc.StatusCode.OK
    finally:
        release.set()
        channel.close()
    assert pod.proc.wait(timeout=grace + 10) == 0, pod.log
