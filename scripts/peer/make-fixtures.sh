#!/usr/bin/env bash
# Regenerates the committed test fixtures from the llama.cpp peer:
#   tests/fixtures/smollm2_tokens.txt  (llama_ref tokenize)
#   tests/fixtures/smollm2_greedy.txt  (llama_ref eval, NGEN=48)
#   tests/fixtures/quant_ref.gguf      (make_quant_fixture.py, python gguf)
#   tests/fixtures/smollm2_greedy_f32.txt (llama_ref eval, NGEN=48, on the
#       same weights dequantised to F32 by make_f32_model.py: llama.cpp then
#       computes in f32 without quantising activations to Q8_1)
# usage: make-fixtures.sh [--f32-only] [MODEL]
#   --f32-only  only (re)make the F32 model and smollm2_greedy_f32.txt
set -euo pipefail

F32_ONLY=0
if [ "${1:-}" = "--f32-only" ]; then
    F32_ONLY=1
    shift
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODEL=${1:-$HOME/.cache/lamina/SmolLM2-135M-Instruct.Q4_1.gguf}
PEER_DIR=${LAMINA_PEER_DIR:-$HOME/.cache/lamina/peer}
FIX=$ROOT/tests/fixtures
NGEN=48
F32_MODEL=$PEER_DIR/SmolLM2-135M-Instruct.dequant-f32.gguf

"$HERE/build-llama-cpp.sh"
REF=$PEER_DIR/llama_ref
mkdir -p "$FIX"

if [ "$F32_ONLY" = 0 ]; then
    python3 "$HERE/make_strings.py"
    "$REF" tokenize "$MODEL" "$HERE/tokenizer_strings.txt" "$FIX/smollm2_tokens.txt"
    "$REF" -t 1 eval "$MODEL" "$HERE/prompts.txt" "$FIX/smollm2_greedy.txt" "$NGEN" \
        2> "$PEER_DIR/greedy_text.log"
    python3 "$HERE/make_quant_fixture.py" "$FIX/quant_ref.gguf"
    python3 "$HERE/check_quant_fixture.py" "$FIX/quant_ref.gguf" "$PEER_DIR/build/bin"
fi

# Exact-arithmetic oracle: llama.cpp on the F32-dequantised weights, same
# prompts and settings (f32 KV, no flash attention, no repack, 1 thread).
python3 "$HERE/make_f32_model.py" "$MODEL" "$F32_MODEL"
F32_TMP=$PEER_DIR/smollm2_greedy_f32.tmp
"$REF" -t 1 --kv f32 eval "$F32_MODEL" "$HERE/prompts.txt" "$F32_TMP" "$NGEN" \
    2> "$PEER_DIR/greedy_text_f32.log"
{
    echo "# llama.cpp on the F32-dequantised SmolLM2-135M-Instruct weights" \
         "($(basename "$MODEL") -> F32 by make_f32_model.py; no Q8_1 activations)"
    cat "$F32_TMP"
} > "$FIX/smollm2_greedy_f32.txt"
rm -f "$F32_TMP"
# Same tokenizer, so the prompt token ids must match the Q4_1 fixture's.
if [ -f "$FIX/smollm2_greedy.txt" ] && ! cmp -s \
        <(grep '^tokens ' "$FIX/smollm2_greedy.txt") \
        <(grep '^tokens ' "$FIX/smollm2_greedy_f32.txt"); then
    echo "error: prompt tokens differ between smollm2_greedy.txt and smollm2_greedy_f32.txt" >&2
    exit 1
fi

echo
echo "== summary"
if [ "$F32_ONLY" = 0 ]; then
    echo "tokens: $(grep -vc '^#' "$FIX/smollm2_tokens.txt") strings -> $FIX/smollm2_tokens.txt"
    echo "greedy: $(grep -c '^prompt ' "$FIX/smollm2_greedy.txt") prompts, ngen=$NGEN -> $FIX/smollm2_greedy.txt"
    echo "quant:  $(stat -c %s "$FIX/quant_ref.gguf") bytes -> $FIX/quant_ref.gguf"
    echo "greedy text (for eyeballing): $PEER_DIR/greedy_text.log"
fi
echo "greedy f32: $(grep -c '^prompt ' "$FIX/smollm2_greedy_f32.txt") prompts, ngen=$NGEN -> $FIX/smollm2_greedy_f32.txt"
echo "f32 model:  $(stat -c %s "$F32_MODEL") bytes -> $F32_MODEL"
echo "greedy f32 text (for eyeballing): $PEER_DIR/greedy_text_f32.log"
