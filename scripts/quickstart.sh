#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, fetch the
# shipped model, build, start a local attention node (it holds the KV cache
# and runs attention) and a compute node (the dense layers) on loopback UCX,
# and generate text for a prompt.
#   scripts/quickstart.sh ["prompt"] [extra lamina-compute-node flags...]
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"Explain in two sentences why the sky is blue."}
shift || true

if ! pkg-config --exists ucx jemalloc cunit libutf8proc jansson libsodium 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends build-essential cmake pkg-config \
        libucx-dev ucx-utils libjemalloc-dev libcunit1-dev libutf8proc-dev libjansson-dev libsodium-dev \
        python3 python3-pip
fi
MODEL=$(bash scripts/fetch-model.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target lamina-compute-node lamina-attention-node

# Loopback UCX settings that work on every machine (DESIGN.md section 4).
export UCX_TLS=${UCX_TLS:-tcp} UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} UCX_WARN_UNUSED_ENV_VARS=n
export LAMINA_CLUSTER_TOKEN=${LAMINA_CLUSTER_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}

NODE_OUT=$(mktemp)
./build/attention_node/lamina-attention-node --model "$MODEL" --port 0 --kv-capacity 512M >"$NODE_OUT" &
NODE_PID=$!
trap 'kill $NODE_PID 2>/dev/null; wait $NODE_PID 2>/dev/null; rm -f "$NODE_OUT"' EXIT
for _ in $(seq 100); do
    grep -q "listening on" "$NODE_OUT" && break
    kill -0 $NODE_PID 2>/dev/null || { echo "quickstart: the attention node did not start" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(sed -n 's/.*listening on //p' "$NODE_OUT")
[ -n "$ADDR" ] || { echo "quickstart: the attention node did not report its address" >&2; exit 1; }

./build/compute_node/lamina-compute-node --attention "$ADDR" --model "$MODEL" --prompt "$PROMPT" "$@"
