#!/usr/bin/env bash
# `make check-pypi`: the README's commands on a machine whose pip reaches PyPI alone
# (scripts/pypi_only.sh: no pip configuration, no PIP_* settings), on a fresh clone of
# HEAD in a temporary folder named `actgrad`, as a user's would be:
# - `make serve` installs the server lock and answers `actgrad health` and a call
#   (timed from nothing);
# - `make install` installs the dev lock (timed), and the installed package wins over
#   the clone's folder seen from its parent (tests/integration/test_install.py);
# - `make torch` refuses, saying how to get the CPU build, and installs no torch;
# - every pin of the other locks (build, cuda) exists on PyPI (resolved, not installed).
# Exits 1 on the first failure. Uses pip's cache like any user's second install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
pypi_only=("$repo/scripts/pypi_only.sh")
work=$(mktemp -d "${TMPDIR:-/tmp}/actgrad-check-pypi.XXXXXX")
server_group=
cleanup() {
    if [[ -n $server_group ]]; then kill -TERM -- "-$server_group" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '== check-pypi: %s\n' "$*"; }

clone="$work/actgrad"
git clone --quiet "$repo" "$clone"
cd "$clone"
say "fresh clone of $(git rev-parse --short HEAD) in $clone, pip isolated to PyPI"

# make serve, in a venv of its own, until it answers.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
http_port=$(free_port)
serve_venv=.venv-serve
start=$SECONDS
setsid "${pypi_only[@]}" make --no-print-directory serve VENV="$serve_venv" PORT="$port" HTTP_PORT="$http_port" \
    >"$work/serve.log" 2>&1 &
server_group=$!
until "$serve_venv/bin/actgrad" health --timeout 1 --target "127.0.0.1:$port" >/dev/null 2>&1; do
    if ! kill -0 "$server_group" 2>/dev/null || ((SECONDS - start > 600)); then
        tail -n 30 "$work/serve.log" >&2
        say "FAILED: make serve did not answer" >&2
        exit 1
    fi
    sleep 0.5
done
answer=$("$serve_venv/bin/actgrad" call relu -1 2 --target "127.0.0.1:$port")
say "make serve answered after $((SECONDS - start)) s: relu(-1, 2) = $answer"
# HTTP too (the server lock's starlette and uvicorn): the Open Inference Protocol's REST.
http_answer=$("$serve_venv/bin/python" -c 'import sys, urllib.request
body = b"{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [2], \"data\": [-1, 2]}]}"
url = f"http://127.0.0.1:{sys.argv[1]}/v2/models/relu/infer"
print(urllib.request.urlopen(urllib.request.Request(url, body), timeout=30).read().decode())' "$http_port")
say "make serve answered over HTTP: $http_answer"
extra=$("$serve_venv/bin/python" -m pip list --format=freeze | grep -i -E '^(mypy|ruff|pytest|matplotlib|torch)==' || true)
if [[ -n $extra ]]; then
    say "FAILED: make serve installed the dev toolchain: $extra" >&2
    exit 1
fi
kill -TERM -- "-$server_group"
wait "$server_group" || true
server_group=

# make install: the dev lock.
start=$SECONDS
"${pypi_only[@]}" make --no-print-directory install
say "make install passed in $((SECONDS - start)) s"
# (without torch here, whatever ACTGRAD_REQUIRE_TORCH the caller set)
(cd "$work" && env -u ACTGRAD_REQUIRE_TORCH "$clone/.venv/bin/python" -m pytest -q \
    -p no:cacheprovider "$clone/tests/integration/test_install.py")

# make torch: refused, loudly, and nothing installed.
if "${pypi_only[@]}" make --no-print-directory torch >"$work/torch.log" 2>&1; then
    say "FAILED: make torch installed something from PyPI" >&2
    exit 1
fi
grep -q 'download.pytorch.org/whl/cpu' "$work/torch.log" || {
    cat "$work/torch.log" >&2
    say "FAILED: make torch did not say how to get the CPU build" >&2
    exit 1
}
if .venv/bin/python -c 'import torch' 2>/dev/null; then
    say "FAILED: torch is installed after make torch refused" >&2
    exit 1
fi
say "make torch refused without the CPU build, and said how to get it"

# The other locks: every pin resolves on PyPI.
for lock in requirements/build.txt requirements/cuda.txt; do
    "${pypi_only[@]}" .venv/bin/python -m pip install --quiet --dry-run --ignore-installed \
        --no-deps --require-hashes -r "$lock"
done
say "build.txt and cuda.txt resolve on PyPI"
say "passed"
