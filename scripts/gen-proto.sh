#!/usr/bin/env bash
# Generate Python gRPC/protobuf modules from proto/ into src/palisade/observe/api/ (not committed).
# The .proto files keep Hubble's layout (flow/flow.proto, observer/observer.proto, relay/relay.proto) so the
# registered descriptor names match Hubble's; the generated modules are laid flat into the package
# (flow_pb2.py, observer_pb2.py, relay_pb2.py, observer_pb2_grpc.py) and their imports of each other are
# rewritten to absolute imports from palisade.observe.api.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob globstar
protos=(proto/**/*.proto)
((${#protos[@]})) || exit 0
out=src/palisade/observe/api
py=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m grpc_tools.protoc -Iproto --python_out="$tmp" --grpc_python_out="$tmp" --pyi_out="$tmp" "${protos[@]}"
mkdir -p "$out"
for f in "$tmp"/*/*_pb2*.py "$tmp"/*/*_pb2*.pyi; do
  sed -E \
    -e 's/^from (flow|relay|observer) import ([a-z_0-9]+) as /from palisade.observe.api import \2 as /' \
    -e 's/^from (flow|relay|observer)\.([a-z_0-9]+) import /from palisade.observe.api.\2 import /' \
    -e 's/^from (flow|relay|observer) import ([a-z_0-9]+)$/from palisade.observe.api import \2/' \
    "$f" > "$out/$(basename "$f")"
done
