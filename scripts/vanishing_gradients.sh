#!/usr/bin/env bash
# Regenerates the figures of docs/vanishing-gradients.md (and prints their tables)
# with `actgrad flow --plot`, against a server it starts on $PORT and stops after.
# Usage: scripts/vanishing_gradients.sh [PYTHON]   (default: .venv/bin/python; needs
# matplotlib: pip install 'actgrad[plot]')
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
PORT="${PORT:-50071}"
OUT=docs/vanishing-gradients
mkdir -p "$OUT"
"$PY" -m actgrad serve --port "$PORT" --http-port -1 --log-level warning &
SERVER=$!
trap 'kill "$SERVER"; wait "$SERVER" || true' EXIT
flow() { "$PY" -m actgrad flow --target "127.0.0.1:$PORT" --timeout 120 "$@"; }
for _ in $(seq 60); do
  "$PY" -m actgrad health --target "127.0.0.1:$PORT" --timeout 1 >/dev/null 2>&1 && break
  sleep 1
done
# Depth 30, width 256, batch 128, seed 0 (the defaults) throughout.
flow sigmoid tanh relu gelu selu --init xavier_normal --plot "$OUT/activations.png"
flow relu --init xavier_normal he_normal --plot "$OUT/relu-init.png"
flow selu --init lecun_normal he_normal --plot "$OUT/selu-init.png"
flow tanh --init normal xavier_normal --init-std 0.01 --plot "$OUT/tanh-small-init.png"
flow sigmoid tanh --init xavier_normal --normalize --plot "$OUT/normalize.png"
flow sigmoid tanh --init xavier_normal --residual --plot "$OUT/residual.png"
