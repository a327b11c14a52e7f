#!/usr/bin/env bash
# Generates the Open Inference Protocol stubs (proto/oip/v2) into OUT/actgrad_server/oip.
# Usage: scripts/generate_oip_stubs.sh PYTHON OUT
#
# The protos keep the protocol's package `inference` (its service and method paths are
# wire facts), and so does every other OIP implementation (Triton's client, KServe,
# MLServer). Messages in protobuf's default descriptor pool clash by full name, so the
# generated modules are rewritten to register into a private pool
# (actgrad_server/oip/_pool.py): the server then imports cleanly next to tritonclient.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$1"
OUT="$2"
mkdir -p "$OUT/actgrad_server/oip"
"$PY" -m grpc_tools.protoc \
  -Iactgrad_server/oip=proto/oip/v2 \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  proto/oip/v2/*.proto
for module in "$OUT"/actgrad_server/oip/*_pb2.py; do
  sed -i \
    -e 's/^from google\.protobuf import descriptor_pool as _descriptor_pool$/from actgrad_server.oip import _pool/' \
    -e 's/_descriptor_pool\.Default()/_pool.POOL/' \
    "$module"
  if grep -q '_descriptor_pool' "$module"; then
    echo "generate_oip_stubs.sh: $module still uses the default descriptor pool" >&2
    exit 1
  fi
done
