#!/usr/bin/env bash
# Regenerates the committed Python stubs (with .pyi) from proto/.
# Usage: scripts/generate_stubs.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
OUT=client
rm -f "$OUT"/actgrad/v1/*_pb2.py "$OUT"/actgrad/v1/*_pb2.pyi "$OUT"/actgrad/v1/*_pb2_grpc.py
"$PY" -m grpc_tools.protoc \
  --proto_path=proto \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  proto/actgrad/v1/*.proto
touch "$OUT"/actgrad/v1/__init__.py
# The Open Inference Protocol stubs live in the server package (see the script).
rm -f server/actgrad_server/oip/*_pb2.py server/actgrad_server/oip/*_pb2.pyi \
  server/actgrad_server/oip/*_pb2_grpc.py
scripts/generate_oip_stubs.sh "$PY" server
