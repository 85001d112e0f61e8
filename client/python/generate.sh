#!/usr/bin/env bash
# Generates the Python gRPC stubs of every .proto file in proto/proto into
# OUT (default: client/python/gen, which git ignores).
#
#   client/python/generate.sh [OUT]
#
# Needs grpcio-tools: pip install -r client/python/requirements.txt
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/gen}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import grpc_tools' 2>/dev/null; then
    echo "generate.sh: grpc_tools is not installed for $python;" \
         "run: pip install -r client/python/requirements.txt" >&2
    exit 2
fi

mkdir -p "$out"
cd "$root"
mapfile -t protos < <(find proto/proto -name '*.proto' | sort)
if [ "${#protos[@]}" -eq 0 ]; then
    echo "generate.sh: no .proto files under $root/proto/proto" >&2
    exit 2
fi
"$python" -m grpc_tools.protoc -I proto/proto \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "${protos[@]}"
echo "generated ${#protos[@]} proto file(s) into $out"
