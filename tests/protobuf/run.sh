#!/usr/bin/env bash
# Interop test of proto/switchyard.proto (issue 18): protoc generates Python
# message classes from the .proto, and tests/protobuf/interop.py drives the
# real switchyard binary with them (it starts its own server on
# 127.0.0.1:0 with a temp SQLite file).
#
#   bash tests/protobuf/run.sh
#
# Needs protoc (Debian: protobuf-compiler) and python3 with the protobuf
# and websockets packages; SWITCHYARD_BIN picks the binary (default: the
# newer of target/release and target/debug). Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
protoc --proto_path="$repo/proto" --python_out="$out" "$repo/proto/switchyard.proto"
echo "# $(protoc --version); python $(python3 -c 'import google.protobuf, websockets; print("protobuf", google.protobuf.__version__, "websockets", websockets.__version__)')"
PYTHONPATH="$out${PYTHONPATH:+:$PYTHONPATH}" python3 "$here/interop.py"
