#!/usr/bin/env bash
# Fails when the committed stubs in client/actgrad/v1 differ from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$PY" -m grpc_tools.protoc --proto_path=proto --python_out="$scratch" --pyi_out="$scratch" \
  --grpc_python_out="$scratch" proto/actgrad/v1/*.proto
status=0
for generated in "$scratch"/actgrad/v1/*.py "$scratch"/actgrad/v1/*.pyi; do
  committed="client/actgrad/v1/$(basename "$generated")"
  if ! cmp -s "$generated" "$committed"; then
    echo "stale generated stub: $committed (run: make stubs)" >&2
    status=1
  fi
done
for committed in client/actgrad/v1/*_pb2*.py*; do
  if [ ! -e "$scratch/actgrad/v1/$(basename "$committed")" ]; then
    echo "generated stub without a proto: $committed" >&2
    status=1
  fi
done
# The Open Inference Protocol stubs in the server package.
scripts/generate_oip_stubs.sh "$PY" "$scratch/oip"
for generated in "$scratch"/oip/actgrad_server/oip/*.py "$scratch"/oip/actgrad_server/oip/*.pyi; do
  committed="server/actgrad_server/oip/$(basename "$generated")"
  if ! cmp -s "$generated" "$committed"; then
    echo "stale generated stub: $committed (run: make stubs)" >&2
    status=1
  fi
done
for committed in server/actgrad_server/oip/*_pb2*.py*; do
  if [ ! -e "$scratch/oip/actgrad_server/oip/$(basename "$committed")" ]; then
    echo "generated stub without a proto: $committed" >&2
    status=1
  fi
done
exit $status
