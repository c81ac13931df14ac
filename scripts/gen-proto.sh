#!/usr/bin/env bash
# Generate Python gRPC/protobuf modules from proto/ into src/palisade/observe/api/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob globstar
protos=(proto/**/*.proto)
((${#protos[@]})) || exit 0
out=src/palisade/observe/api
mkdir -p "$out"
.venv/bin/python -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" "${protos[@]}"
