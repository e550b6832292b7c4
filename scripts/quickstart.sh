#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, fetch the
# shipped model, build, and generate text for a prompt with the compute node
# running attention locally.
#   scripts/quickstart.sh ["prompt"] [extra lamina-compute-node flags...]
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"Explain in two sentences why the sky is blue."}
shift || true

if ! pkg-config --exists ucx jemalloc cunit libutf8proc jansson 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends build-essential cmake pkg-config \
        libucx-dev ucx-utils libjemalloc-dev libcunit1-dev libutf8proc-dev libjansson-dev python3 python3-pip
fi
MODEL=$(bash scripts/fetch-model.sh)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target lamina-compute-node
exec ./build/compute_node/lamina-compute-node --local-attention --model "$MODEL" --prompt "$PROMPT" "$@"
