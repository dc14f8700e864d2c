#!/usr/bin/env bash
# Regenerates the *_pb2.py files next to this script from the .proto files.
# Generator: grpcio-tools 1.76.0 (bundles protoc 31.1 -> gencode 6.31.1), which
# the protobuf 6.x runtime in .venv accepts. The runtime needs only `protobuf`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../../.." && pwd)"
python="${PYTHON:-$repo_root/.venv/bin/python}"
cd "$repo_root"
"$python" -m grpc_tools.protoc -I . --python_out=. \
  index_builder/ondevice/protos/scann_ondevice_config.proto \
  index_builder/ondevice/protos/index_config.proto
