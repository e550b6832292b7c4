#!/usr/bin/env bash
# Decode throughput of the llama.cpp peer, for comparison with Lamina.
# usage: bench-llama-cpp.sh MODEL THREADS
# stdout (exactly two lines, parsed by Lamina's benchmark):
#   llama_cpp_tg_b1_tps  <tokens/s, one sequence, llama-bench -p 0 -n 64>
#   llama_cpp_tg_b16_tps <tokens/s summed over 16 sequences, llama-batched-bench
#                         -npp 16 -ntg 32 -npl 16>
# Everything else goes to stderr. llama.cpp defaults otherwise (F16 KV cache,
# flash attention auto, weight repacking on). Builds the peer if it is missing.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 MODEL THREADS" >&2
    exit 2
fi
MODEL=$1
THREADS=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${LAMINA_PEER_DIR:-$HOME/.cache/lamina/peer}/build/bin

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-batched-bench" ]; then
    "$HERE/build-llama-cpp.sh" >&2
fi

b1_json=$("$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 0 -n 64 -o json 2>/dev/null)
b16_jsonl=$("$BIN/llama-batched-bench" -m "$MODEL" -t "$THREADS" -c 2048 -b 2048 -ub 512 \
    -npp 16 -ntg 32 -npl 16 --output-format jsonl 2>/dev/null)

B1_JSON=$b1_json B16_JSONL=$b16_jsonl python3 - <<'PY'
import json, os, sys
b1 = json.loads(os.environ["B1_JSON"])
tg = [r for r in b1 if r.get("n_prompt") == 0 and r.get("n_gen", 0) > 0]
if not tg:
    sys.exit("llama-bench: no tg result")
rows = [json.loads(l) for l in os.environ["B16_JSONL"].splitlines()
        if l.startswith("{") and '"speed_tg"' in l]
if not rows:
    sys.exit("llama-batched-bench: no result")
r = rows[-1]
print(f"# llama-bench: {tg[0]['model_type']}, threads={tg[0]['n_threads']}, "
      f"stddev={tg[0]['stddev_ts']:.2f} t/s; batched: pl={r['pl']} pp={r['pp']} "
      f"tg={r['tg']} t_tg={r['t_tg']:.3f}s", file=sys.stderr)
print(f"llama_cpp_tg_b1_tps {tg[0]['avg_ts']:.3f}")
print(f"llama_cpp_tg_b16_tps {r['speed_tg']:.3f}")
PY
