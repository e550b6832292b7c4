#!/usr/bin/env bash
# Fuzzes a parser with libFuzzer + ASan + UBSan.
#   scripts/fuzz.sh [seconds] [target]   default 60 s of "wire"; exits nonzero on any crash
#   (0 seconds: only build the binary, e.g. to replay a crash input)
# Targets: wire (the wire decoder, proto/wire.c), config (the config file
# and value parsers, common/config*.c), gguf (model files: the GGUF reader,
# the model loader and the tokenizer built from a file, common/), http (the
# HTTP API's request bodies and its stop-string text filter, compute_node/).
# Needs clang 14 and its runtimes (Debian 12: clang-14 libclang-rt-14-dev).
# The binary goes to build-fuzz/, and so does any crash-*/leak-*/timeout-*
# input it finds (replay one with: build-fuzz/fuzz_<target> build-fuzz/crash-...).
# The corpus lives in a temporary directory and is thrown away: each run
# starts from the seeds the binary writes (LAM_FUZZ_SEEDS, tests/fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${1:-60}
TARGET=${2:-wire}
LIBS=()
case $SECONDS_TO_RUN in
    '' | *[!0-9]*) echo "usage: $0 [seconds] [wire|config|gguf|http]" >&2; exit 2 ;;
esac
case $TARGET in
    wire) SOURCES=(tests/fuzz/fuzz_wire.c proto/wire.c); MAX_LEN=8192 ;;
    config) SOURCES=(tests/fuzz/fuzz_config.c common/config.c common/config_file.c common/config_print.c)
            MAX_LEN=4096 ;;
    gguf) SOURCES=(tests/fuzz/fuzz_gguf.c tests/util/gguf_build.c common/gguf.c common/dequant.c common/model.c
                   common/log.c common/tokenizer.c common/tok_chat.c common/tok_encode.c common/tok_gguf.c
                   common/tok_pretok.c)
          LIBS=(-lutf8proc -lm); MAX_LEN=32768 ;;
    http) SOURCES=(tests/fuzz/fuzz_http.c compute_node/http_parse.c compute_node/serve_text.c common/dequant.c common/gguf.c
                   common/log.c common/tokenizer.c common/tok_chat.c common/tok_encode.c common/tok_gguf.c
                   common/tok_pretok.c)
          LIBS=(-ljansson -lutf8proc -lm); MAX_LEN=4096 ;;
    *) echo "usage: $0 [seconds] [wire|config|gguf|http]" >&2; exit 2 ;;
esac

CC=${FUZZ_CC:-}
if [ -z "$CC" ]; then
    for c in clang-14 clang; do
        if command -v "$c" > /dev/null; then CC=$c; break; fi
    done
fi
if [ -z "$CC" ]; then
    echo "fuzz.sh: no clang found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
    exit 1
fi

OUT=build-fuzz
mkdir -p "$OUT"
"$CC" -std=c11 -D_GNU_SOURCE -I. -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror \
    "${SOURCES[@]}" "${LIBS[@]}" -o "$OUT/fuzz_$TARGET"

if [ "$SECONDS_TO_RUN" -eq 0 ]; then
    echo "fuzz.sh: built $OUT/fuzz_$TARGET"
    exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lamina-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus" "$WORK/seeds"
LAM_FUZZ_SEEDS="$WORK/seeds" "$OUT/fuzz_$TARGET"
echo "fuzz.sh: $TARGET: $(ls "$WORK/seeds" | wc -l) seeds, fuzzing for ${SECONDS_TO_RUN}s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
DICT=()
if [ -f "tests/fuzz/$TARGET.dict" ]; then DICT=(-dict="tests/fuzz/$TARGET.dict"); fi
# -timeout: one input taking a second is a bug in a parser this small.
"$OUT/fuzz_$TARGET" -max_total_time="$SECONDS_TO_RUN" -timeout=10 -max_len="$MAX_LEN" "${DICT[@]}" \
    -print_final_stats=1 -artifact_prefix="$OUT/" "$WORK/corpus" "$WORK/seeds"
