#!/usr/bin/env bash
# Build llama.cpp (vendored in the llama-cpp-python 0.3.36 sdist) as a
# correctness/speed peer, OUTSIDE this repository, plus our own llama_ref.c.
#
#   LAMINA_PEER_DIR   where everything goes (default ~/.cache/lamina/peer)
#   LAMINA_PEER_JOBS  parallel build jobs (default 2)
#
# Idempotent: re-running only rebuilds what changed. Prints the binary paths.
set -euo pipefail

VERSION=0.3.36
PEER_DIR=${LAMINA_PEER_DIR:-$HOME/.cache/lamina/peer}
JOBS=${LAMINA_PEER_JOBS:-2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SDIST=llama_cpp_python-$VERSION.tar.gz
SRC=$PEER_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp
BUILD=$PEER_DIR/build

mkdir -p "$PEER_DIR"

if [ ! -f "$PEER_DIR/$SDIST" ]; then
    if [ -f "/tmp/dl/$SDIST" ]; then
        cp "/tmp/dl/$SDIST" "$PEER_DIR/"
    else
        python3 -m pip download --no-deps --no-binary :all: \
            "llama-cpp-python==$VERSION" -d "$PEER_DIR"
    fi
fi

if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tar -xzf "$PEER_DIR/$SDIST" -C "$PEER_DIR"
fi

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    # LLAMA_CURL is deprecated in this version (kept for older trees);
    # LLAMA_OPENSSL=OFF: the peer never downloads anything.
    cmake -S "$SRC" -B "$BUILD" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON \
        -DGGML_NATIVE=ON \
        -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_COMMON=ON \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_EXAMPLES=ON \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF
fi

cmake --build "$BUILD" -j "$JOBS" --target \
    llama llama-bench llama-batched-bench llama-tokenize llama-simple

# Our own reference program, linked against libllama with an rpath.
REF=$PEER_DIR/llama_ref
if [ ! -x "$REF" ] || [ "$HERE/llama_ref.c" -nt "$REF" ] \
        || [ "$BUILD/bin/libllama.so" -nt "$REF" ]; then
    cc -O2 -std=c11 -Wall -Wextra \
        -I"$SRC/include" -I"$SRC/ggml/include" \
        -o "$REF" "$HERE/llama_ref.c" \
        -L"$BUILD/bin" -lllama \
        -Wl,-rpath,"$BUILD/bin" -lm
fi

echo "peer_dir            $PEER_DIR"
echo "llama_src           $SRC"
echo "libllama            $BUILD/bin/libllama.so"
echo "llama-bench         $BUILD/bin/llama-bench"
echo "llama-batched-bench $BUILD/bin/llama-batched-bench"
echo "llama-tokenize      $BUILD/bin/llama-tokenize"
echo "llama-simple        $BUILD/bin/llama-simple"
echo "llama_ref           $REF"
