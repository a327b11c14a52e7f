"""docker-compose.yml against the Compose Specification's JSON schema, and its promises.

`compose-spec.json` beside this file is the schema of the Compose Specification,
`schema/compose-spec.json` of github.com/compose-spec/compose-spec (branch main),
as shipped verbatim in the npm package dclint 3.1.0 (`schemas/compose.schema.json`,
which its maintainers download from that path). It is a spec fact, vendored so that
the check runs offline; refresh it the same way.

Docker Compose interpolates `${VAR:-default}` before it validates, so the file is
checked as `docker compose config` would see it with none of those variables set.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import COMPOSE_FILE, NGINX_TEMPLATE, REPO, template_variables

from actgrad_server import config

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
ACTGRAD_SERVICES = ("actgrad", "actgrad-gpu", "actgrad-replica")
SETTINGS_VARIABLES = {"ACTGRAD_" + f.name.upper() for f in dataclasses.fields(config.Settings)}
HEALTHCHECK_KEYS_ENGINE_20_10 = {
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's variable interpolation over every string of a loaded file."""
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        given = environ.get(name)
        if match["op"] == ":-" and not given:
            return match["default"]
        if match["op"] == "-" and given is None:
            return match["default"]
        return given or ""

    return _VARIABLE.sub(replace, value)


def duration_seconds(text: str) -> float:
    """A compose duration ("20s", "1m30s") in seconds."""
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    resolved = interpolate(raw, {})
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "x d d"
    assert interpolate("${EMPTY-d} ${UNSET-d} $SET $$SET", env) == " d x $SET"


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(compose), key=str)
    assert errors == [], "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "path, value",
    [
        (("services", "actgrad", "restart_policy"), "always"),  # not a service key
        (("services", "actgrad", "cap_drop"), "ALL"),  # must be a list
        (("services", "actgrad", "healthcheck", "test"), 5),  # a string or a list
        (("services", "actgrad", "deploy", "resources", "limits", "memory"), 2048),  # "2g"
    ],
)
def test_schema_check_rejects_a_broken_file(
    compose: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(compose)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)


def test_services_and_profiles(raw: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert "version" not in raw  # obsolete in the Compose Specification
    assert set(services) == {"actgrad", "actgrad-gpu", "actgrad-replica", "actgrad-lb"}
    assert "profiles" not in services["actgrad"]  # `docker compose up` starts it
    assert services["actgrad-gpu"]["profiles"] == ["gpu"]
    assert services["actgrad-replica"]["profiles"] == ["scale"]
    assert services["actgrad-lb"]["profiles"] == ["scale"]


@pytest.mark.parametrize("name", [*ACTGRAD_SERVICES, "actgrad-lb"])
def test_every_service_is_locked_down(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert service["read_only"] is True
    assert any(mount.split(":")[0] == "/tmp" for mount in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    limits = service["deploy"]["resources"]["limits"]
    assert int(limits["pids"]) > 0
    assert re.fullmatch(r"\d+[kmg]", limits["memory"])
    assert "privileged" not in service and "network_mode" not in service


@pytest.mark.parametrize("name", ACTGRAD_SERVICES)
def test_actgrad_services_run_the_image_with_settings_only_from_the_environment(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
    assert dockerfile.is_file()
    assert "command" not in service and "entrypoint" not in service
    environment = {key: str(value) for key, value in service["environment"].items()}
    # Every variable is a real setting (a typo would be ignored by the server),
    # and the values are ones `actgrad serve` accepts.
    assert set(environment) <= SETTINGS_VARIABLES, set(environment) - SETTINGS_VARIABLES
    settings = config.load(environ=environment)
    assert settings.host == "0.0.0.0"
    # Docker sends SIGKILL after stop_grace_period: it must outlast the drain.
    assert service["stop_signal"] == "SIGTERM"
    assert duration_seconds(service["stop_grace_period"]) > settings.grace + 2

    health = service["healthcheck"]
    assert health["test"][0] == "CMD"
    argv = health["test"][1:]
    assert argv[:2] == ["actgrad", "health"]
    assert argv[argv.index("--target") + 1] == f"127.0.0.1:{settings.port}"
    assert duration_seconds(health["timeout"]) > float(argv[argv.index("--timeout") + 1])
    assert duration_seconds(health["start_period"]) > 0 and int(health["retries"]) >= 1
    # Docker Compose refuses `start_interval` below Docker Engine 25 ("feature
    # require Docker Engine v25 or later"): the file is for Engine 20.10+.
    assert set(health) <= HEALTHCHECK_KEYS_ENGINE_20_10, set(health) - HEALTHCHECK_KEYS_ENGINE_20_10


def test_load_balancer_can_write_its_rendered_configuration(
    services: dict[str, dict[str, Any]],
) -> None:
    # The nginx image renders its template into conf.d as uid 101. A tmpfs over an
    # existing directory takes that directory's mode, not `mode=` (Docker 20.10 with
    # runc: root-owned, 0775), so only uid=/gid= make it nginx's.
    mounts = dict(entry.split(":", 1) for entry in services["actgrad-lb"]["tmpfs"])
    options = dict(o.split("=", 1) for o in mounts["/etc/nginx/conf.d"].split(","))
    assert options.get("uid") == "101" and options.get("gid") == "101", options


def test_devices(services: dict[str, dict[str, Any]]) -> None:
    assert services["actgrad"]["environment"]["ACTGRAD_DEVICE"] == "cpu"
    gpu = services["actgrad-gpu"]
    assert gpu["environment"]["ACTGRAD_DEVICE"] == "cuda"
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert int(device["count"]) >= 1


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    ports = []
    for entry in service.get("ports", []):
        address, host, container = str(entry).rsplit(":", 2)
        ports.append((address, int(host), int(container)))
    return ports


#: Each published port's host-port variable and default: gRPC 5005x, HTTP 800x.
PUBLISHED = {
    "actgrad": {"ACTGRAD_PUBLISH_PORT": 50051, "ACTGRAD_HTTP_PUBLISH_PORT": 8000},
    "actgrad-gpu": {"ACTGRAD_GPU_PUBLISH_PORT": 50052, "ACTGRAD_GPU_HTTP_PUBLISH_PORT": 8001},
    "actgrad-lb": {"ACTGRAD_LB_PUBLISH_PORT": 50053, "ACTGRAD_LB_HTTP_PUBLISH_PORT": 8003},
}


def test_published_ports_bind_loopback_and_do_not_collide(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name: _published(service) for name, service in services.items()}
    assert published["actgrad-replica"] == []  # reached through the balancer only
    host_ports = [host for ports in published.values() for _, host, _ in ports]
    assert sorted(host_ports) == sorted(p for ports in PUBLISHED.values() for p in ports.values())
    assert len(host_ports) == len(set(host_ports)) == 6
    assert {address for ports in published.values() for address, _, _ in ports} == {"127.0.0.1"}
    # gRPC and HTTP, each on the port the server listens on.
    for name in ("actgrad", "actgrad-gpu"):
        environment = services[name]["environment"]
        assert [container for _, _, container in published[name]] == [
            int(environment["ACTGRAD_PORT"]),
            int(environment["ACTGRAD_HTTP_PORT"]),
        ]
    lb = services["actgrad-lb"]["environment"]
    assert [container for _, _, container in published["actgrad-lb"]] == [
        int(lb["ACTGRAD_LB_LISTEN"]),
        int(lb["ACTGRAD_LB_HTTP_LISTEN"]),
    ]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_host_ports_are_variables_named_in_the_docs(
    raw: dict[str, Any], name: str
) -> None:
    """Every host port is `${VARIABLE:-default}` on ACTGRAD_PUBLISH_ADDRESS, and the
    file's header and docs/deployment.md name each variable and its default."""
    entries = raw["services"][name]["ports"]
    found = {}
    for entry in entries:
        match = re.fullmatch(
            r"\$\{ACTGRAD_PUBLISH_ADDRESS:-127\.0\.0\.1\}:\$\{(\w+):-(\d+)\}:\d+", entry
        )
        assert match, entry
        found[match[1]] = int(match[2])
    assert found == PUBLISHED[name]
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    deployment = (REPO / "docs" / "deployment.md").read_text()
    for variable, default in found.items():
        assert variable in header and variable in deployment, variable
        assert f":{default}" in header and f":{default}" in deployment, (variable, default)


def test_scale_profile_puts_replicas_behind_nginx_on_one_port(
    services: dict[str, dict[str, Any]],
) -> None:
    replica, balancer = services["actgrad-replica"], services["actgrad-lb"]
    assert int(replica["deploy"]["replicas"]) >= 2
    assert balancer["depends_on"]["actgrad-replica"]["condition"] == "service_healthy"

    (mount,) = balancer["volumes"]
    source, target, mode = mount.split(":")
    assert (REPO / source).resolve() == NGINX_TEMPLATE
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".template")
    assert mode == "ro"

    environment = balancer["environment"]
    assert template_variables() <= set(environment)
    # Nothing of ours in the template is left to a default: compose sets every name.
    assert {n for n in environment if n.startswith("ACTGRAD_LB_")} == template_variables()
    # The image substitutes only names matching the filter: all of ours, none of
    # nginx's own variables.
    pattern = re.compile(environment["NGINX_ENVSUBST_FILTER"])
    assert all(pattern.search(name) for name in template_variables())
    assert not any(pattern.search(name) for name in ("upstream_addr", "request_id", "HOSTNAME"))

    replica_settings = config.load(environ={k: str(v) for k, v in replica["environment"].items()})
    assert f"server actgrad-replica:{replica_settings.port} " in environment["ACTGRAD_LB_UPSTREAMS"]
    assert (
        f"server actgrad-replica:{replica_settings.http_port} "
        in environment["ACTGRAD_LB_HTTP_UPSTREAMS"]
    )
    # nginx's body limit is the replicas' own, no smaller (and no larger: a body over
    # it would cost the replica its connection, see the template).
    assert int(environment["ACTGRAD_LB_MAX_BODY_BYTES"]) == replica_settings.max_message_bytes
    # Replicas must take calls on all interfaces of their container network.
    assert replica["environment"]["ACTGRAD_HOST"] == "0.0.0.0"
