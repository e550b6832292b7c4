#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, fetch the
# shipped model, build, start a local cluster on loopback (an attention node
# holding the KV cache and a compute node running the dense layers and the
# OpenAI-compatible HTTP API), send one prompt through the API and print the
# answer, then show how to talk to the API.
#   scripts/quickstart.sh ["prompt"] [extra lamina-compute-node flags...]
# LAMINA_HTTP_PORT picks the port (default 8080; 0: any free one),
# LAMINA_BUILD_DIR the build directory (default build). From a
# terminal the cluster keeps serving until Ctrl-C; otherwise it stops after
# the answer.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"Explain in two sentences why the sky is blue."}
shift || true

if ! pkg-config --exists ucx jemalloc cunit libutf8proc jansson libsodium libmicrohttpd libsystemd 2>/dev/null ||
    ! command -v curl >/dev/null; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends build-essential cmake pkg-config curl \
        libucx-dev ucx-utils libjemalloc-dev libcunit1-dev libutf8proc-dev libjansson-dev libsodium-dev \
        libmicrohttpd-dev libsystemd-dev python3 python3-pip
fi
MODEL=$(bash scripts/fetch-model.sh)
BUILD=${LAMINA_BUILD_DIR:-build}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" --target lamina-compute-node lamina-attention-node

# Loopback UCX settings that work on every machine (DESIGN.md section 4).
export UCX_TLS=${UCX_TLS:-tcp} UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} UCX_WARN_UNUSED_ENV_VARS=n
export LAMINA_CLUSTER_TOKEN=${LAMINA_CLUSTER_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
HTTP_PORT=${LAMINA_HTTP_PORT:-8080}
export LAMINA_LOG_LEVEL=${LAMINA_LOG_LEVEL:-warn}

NODE_OUT=$(mktemp)
CN_OUT=$(mktemp)
NODE_PID="" CN_PID=""
cleanup() {
    [ -n "$CN_PID" ] && kill "$CN_PID" 2>/dev/null && wait "$CN_PID" 2>/dev/null
    [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
    rm -f "$NODE_OUT" "$CN_OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_listen FILE PID WHAT: the ADDR:PORT a program prints once it listens
wait_listen() {
    for _ in $(seq 600); do
        grep -q "listening on" "$1" && { sed -n 's/.*listening on //p' "$1" | head -1; return 0; }
        kill -0 "$2" 2>/dev/null || { echo "quickstart: the $3 did not start" >&2; return 1; }
        sleep 0.1
    done
    echo "quickstart: the $3 did not report its address" >&2
    return 1
}

"$BUILD/attention_node/lamina-attention-node" --model "$MODEL" --port 0 --kv-capacity 512M >"$NODE_OUT" &
NODE_PID=$!
ADDR=$(wait_listen "$NODE_OUT" $NODE_PID "attention node")

"$BUILD/compute_node/lamina-compute-node" --attention "$ADDR" --model "$MODEL" --http-port "$HTTP_PORT" \
    --model-name smollm2 "$@" >"$CN_OUT" &
CN_PID=$!
HTTP=$(wait_listen "$CN_OUT" $CN_PID "compute node")
URL="http://$HTTP"

echo "local cluster: attention node on $ADDR (UCX), compute node serving $URL"
echo
echo "> $PROMPT"
BODY=$(python3 -c 'import json, sys; print(json.dumps({"model": "smollm2", "max_tokens": 128, "temperature": 0.2,
    "messages": [{"role": "user", "content": sys.argv[1]}]}))' "$PROMPT")
curl -sS "$URL/v1/chat/completions" -H "Content-Type: application/json" -d "$BODY" |
    python3 -c 'import json, sys; r = json.load(sys.stdin)
if "error" in r: sys.exit("quickstart: " + r["error"]["message"])
print(r["choices"][0]["message"]["content"])
u = r["usage"]
print("\n[%d prompt + %d generated tokens, finish: %s]" % (u["prompt_tokens"], u["completion_tokens"],
      r["choices"][0]["finish_reason"]))'

cat <<EOF

Talk to the API (OpenAI-compatible) while the cluster runs:

  curl $URL/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hello!"}], "stream": true}'

  bash scripts/setup-python.sh     # .venv with the openai package
  .venv/bin/python -c 'from openai import OpenAI
  c = OpenAI(base_url="$URL/v1", api_key="none")
  print(c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)'

  curl $URL/v1/models     curl $URL/health     curl $URL/metrics
EOF
if [ -t 0 ]; then
    echo
    echo "Serving until Ctrl-C."
    wait "$CN_PID"
fi
