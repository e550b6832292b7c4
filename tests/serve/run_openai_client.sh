#!/bin/sh
# ctest entry: runs tests/serve/openai_client.py with the project's venv.
#   run_openai_client.sh ATTENTION_NODE_BIN COMPUTE_NODE_BIN
# Fails when .venv or its openai package is missing (scripts/setup-python.sh
# makes them) unless LAMINA_ALLOW_NO_OPENAI=1; fails without the test model
# unless LAMINA_ALLOW_NO_MODEL=1.
SRC=${LAMINA_SOURCE_DIR:-.}
PY="$SRC/.venv/bin/python"
if ! [ -x "$PY" ] || ! "$PY" -c "import openai" 2>/dev/null; then
    if [ "${LAMINA_ALLOW_NO_OPENAI:-0}" = 1 ]; then
        echo "SKIPPED: no .venv with the openai package (LAMINA_ALLOW_NO_OPENAI=1); run scripts/setup-python.sh"
        exit 0
    fi
    echo "FAILED: $PY with the openai package is missing: run scripts/setup-python.sh" \
         "(or set LAMINA_ALLOW_NO_OPENAI=1 to skip this test)" >&2
    exit 1
fi
MODEL="${LAMINA_MODEL_DIR:-$HOME/.cache/lamina}/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! [ -f "$MODEL" ]; then
    if [ "${LAMINA_ALLOW_NO_MODEL:-0}" = 1 ]; then
        echo "SKIPPED: test model $MODEL missing (LAMINA_ALLOW_NO_MODEL=1)"
        exit 0
    fi
    echo "FAILED: test model $MODEL missing: run scripts/fetch-model.sh" >&2
    exit 1
fi
exec "$PY" "$SRC/tests/serve/openai_client.py" "$1" "$2" "$MODEL"
