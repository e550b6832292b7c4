#!/usr/bin/env bash
# Builds Lamina and runs every test suite under ctest.
#   scripts/test.sh              release build in build/
#   scripts/test.sh --sanitize   AddressSanitizer + UBSan build in build-asan/
#                                (the model tests run on a subset: LAMINA_TEST_QUICK=1)
# The test model must be present (scripts/fetch-model.sh); the model tests
# fail without it unless LAMINA_ALLOW_NO_MODEL=1.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
EXTRA=()
if [ "${1:-}" = "--sanitize" ]; then
    BUILD=build-asan
    EXTRA=(-DLAMINA_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo)
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
    export LAMINA_TEST_QUICK=1
fi
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$BUILD" -DLAMINA_WERROR=ON "${EXTRA[@]}"
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" --output-on-failure -j 1
