"""One image-name scheme everywhere: `actgrad:<version>` (CPU) and `actgrad:<version>-cuda`.

The version is pyproject.toml's. The Dockerfiles' build commands, the compose
services, the Kubernetes base and overlays, the KServe InferenceService and the docs
all name these two, so that an image built as the docs say is the one that compose
and Kubernetes run (a registry goes in front: `newName` in an overlay).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import COMPOSE_FILE, DOCKER, REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CPU_IMAGE = f"actgrad:{VERSION}"
CUDA_IMAGE = f"actgrad:{VERSION}-cuda"
K8S = REPO / "deploy" / "k8s"
# A reference to an image of ours: `actgrad:TAG`, alone or after a registry path.
_REFERENCE = re.compile(r"(?<![\w.:/-])(?:[\w.-]+/)*actgrad:(?!-)[\w.${}:-]+")
# Where images are named by hand (make test-containers derives the name from pyproject.toml).
NAMING_FILES = sorted(
    {
        *REPO.glob("docs/*.md"),
        REPO / "README.md",
        *DOCKER.glob("Dockerfile*"),
        COMPOSE_FILE,
        *(REPO / "deploy").rglob("*.yaml"),
    }
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_every_file_names_one_of_the_two_images() -> None:
    found: dict[str, set[str]] = {}
    for path in NAMING_FILES:
        for reference in _REFERENCE.findall(path.read_text()):
            # A registry in front is the user's: the name and tag are the scheme's.
            name = reference.rstrip(".,:`").rsplit("/", 1)[-1]
            found.setdefault(name, set()).add(path.relative_to(REPO).as_posix())
    assert set(found) <= {CPU_IMAGE, CUDA_IMAGE}, {
        name: sorted(paths) for name, paths in found.items() if name not in (CPU_IMAGE, CUDA_IMAGE)
    }
    assert CPU_IMAGE in found and CUDA_IMAGE in found


@pytest.mark.parametrize(
    ("dockerfile", "image"), [("Dockerfile", CPU_IMAGE), ("Dockerfile.cuda", CUDA_IMAGE)]
)
def test_dockerfile_build_command_tags_its_image(dockerfile: str, image: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    tags = re.findall(rf"docker build -f docker/{re.escape(dockerfile)} -t (\S+) \.", text)
    assert tags == [image]


def test_compose_services_run_the_images() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    images = {name: services[name]["image"] for name in services if "build" in services[name]}
    assert images == {"actgrad": CPU_IMAGE, "actgrad-replica": CPU_IMAGE, "actgrad-gpu": CUDA_IMAGE}
    for name in images:
        expected = "docker/Dockerfile.cuda" if images[name] == CUDA_IMAGE else "docker/Dockerfile"
        assert services[name]["build"]["dockerfile"] == expected


def test_kubernetes_base_and_overlays_run_the_images() -> None:
    deployment = load_yaml(K8S / "base" / "deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == CPU_IMAGE
    for overlay, image in (("cpu", CPU_IMAGE), ("gpu", CUDA_IMAGE)):
        (entry,) = load_yaml(K8S / "overlays" / overlay / "kustomization.yaml")["images"]
        assert entry["name"] == "actgrad"
        assert f"{entry['newName']}:{entry['newTag']}" == image
    service = load_yaml(REPO / "deploy" / "kserve" / "inferenceservice.yaml")
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["image"] == CPU_IMAGE


def test_the_scheme_is_what_the_check_reads() -> None:
    # The pattern finds registry-qualified names and skips settings like `actgrad:--workers`.
    text = "docker build -t registry.example.com/team/actgrad:1.2 . and actgrad:--workers"
    assert _REFERENCE.findall(text) == ["registry.example.com/team/actgrad:1.2"]
