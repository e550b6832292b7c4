#!/usr/bin/env bash
# Builds, tests and benchmarks Lamina's CUDA paths on a GPU machine in one
# command, on a machine with no package registry and no network.
#
#   scripts/gpu-check.sh --fetch-debs
#       On a Debian 12 machine with apt and network: downloads the runtime
#       and -dev packages the build needs (UCX, jemalloc, CUnit, libsodium,
#       utf8proc, jansson, libmicrohttpd, libsystemd, pkgconf and what they
#       load) into .gpu-deps/ (ignored by git: take it along to the GPU
#       machine), and lists what they need that a base system must provide.
#
#   scripts/gpu-check.sh [--quick] [--no-tests] [--no-bench] [--build-dir DIR]
#       On the GPU machine: reports what it finds (OS, compilers, CUDA, GPU,
#       libraries), unpacks .gpu-deps/*.deb into a private prefix (dpkg -x;
#       nothing is installed), points pkg-config, CMake and the loader at
#       it, configures with LAMINA_CUDA=ON for the GPU's architecture,
#       builds, runs the CUDA test suites (ctest -L cuda), runs the GPU
#       benchmarks and prints a short table. Without .gpu-deps it uses the
#       system's libraries. Without a GPU everything up to the first GPU call
#       still runs: the GPU tests skip visibly and the benchmarks report
#       "no GPU". --no-bench and --no-tests split the work into shorter runs
#       (a second run reuses the build directory); --quick shortens the
#       benchmarks.
#
# The model: SmolLM2-135M ($LAMINA_MODEL_DIR or ~/.cache/lamina) is 98 MB,
# more than can be carried to the GPU machine, so when it is missing the
# tests and benchmarks use a synthetic model of its shape with random Q4_1
# weights (lamina-synth-model), and the summary says so. The LLaMA-3-8B
# benchmark always uses random weights made on the GPU.
#
# Logs and results go to $OUT (if set) or DIR/gpu-check: summary.txt,
# build.log, ctest.log, bench.log and the benchmarks' JSON.
# Environment: LAMINA_GPU_PREFIX (unpack prefix, default /tmp/lamina-gpu-deps),
# LAMINA_JOBS (build jobs, default nproc).
# Exit status: 0 when every step that ran passed, 1 when one failed, 2 for
# bad usage or a missing tool the build cannot do without.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEBDIR=$ROOT/.gpu-deps

# Runtime and -dev packages of the build's pkg-config dependencies, and the
# libraries they load that a minimal system may lack.
DEBS=(libucx0 libucx-dev ucx-utils libnuma1 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200
      libjemalloc2 libjemalloc-dev libcunit1 libcunit1-dev libsodium23 libsodium-dev
      libutf8proc2 libutf8proc-dev libjansson4 libjansson-dev libmicrohttpd12 libmicrohttpd-dev
      libsystemd0 libsystemd-dev pkgconf-bin libpkgconf3)
# What those need and every Debian/Ubuntu base system (with gcc) has.
BASE=(libc6 libgcc-s1 libstdc++6 libgomp1 gcc-12-base libgnutls30 libcap2 libgcrypt20 liblz4-1 liblzma5
      libzstd1 adduser debconf)
# Needed by the packages but not by this build: InfiniBand drivers (loopback
# and TCP only), and gnutls headers (microhttpd.h does not include them; its
# .pc names gnutls for static links, a line dropped below).
UNNEEDED=(ibverbs-providers libgnutls28-dev)
# The shared objects those base packages must provide on the GPU machine.
BASE_SONAMES=(libc.so.6 libgcc_s.so.1 libstdc++.so.6 libgomp.so.1 libgnutls.so.30 libcap.so.2 libgcrypt.so.20
              liblz4.so.1 liblzma.so.5 libzstd.so.1)
PC_MODULES=(jemalloc ucx libsodium libutf8proc libsystemd libmicrohttpd jansson cunit)

fetch_debs() {
    command -v apt-get >/dev/null || { echo "gpu-check: --fetch-debs needs apt-get" >&2; exit 2; }
    mkdir -p "$DEBDIR"
    rm -f "$DEBDIR"/*.deb
    # apt's sandbox user cannot write into the tree: download from a temporary directory
    local tmp
    tmp=$(mktemp -d)
    chmod 777 "$tmp"
    (cd "$tmp" && apt-get download "${DEBS[@]}") || { echo "gpu-check: apt-get download failed" >&2; exit 1; }
    mv "$tmp"/*.deb "$DEBDIR"/
    rmdir "$tmp"
    echo "gpu-check: $(ls "$DEBDIR"/*.deb | wc -l) packages, $(du -sh "$DEBDIR" | cut -f1) in $DEBDIR"
    # every dependency must be carried or be part of a base system
    local missing=()
    for f in "$DEBDIR"/*.deb; do
        local deps
        deps=$( (dpkg-deb -f "$f" Depends; dpkg-deb -f "$f" Pre-Depends) | tr ',|' '\n\n' |
               sed -E 's/\(.*\)//; s/:any//; s/ //g' | grep -v '^$')
        for d in $deps; do
            [[ " ${DEBS[*]} ${BASE[*]} ${UNNEEDED[*]} " == *" $d "* ]] || missing+=("$d ($(basename "$f"))")
        done
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "gpu-check: dependencies neither carried nor assumed present:" >&2
        printf '  %s\n' "${missing[@]}" >&2
        exit 1
    fi
    echo "gpu-check: assumed present on the GPU machine: ${BASE_SONAMES[*]}"
    echo "gpu-check: take $DEBDIR along (it is ignored by git) and run scripts/gpu-check.sh there"
}

QUICK=0 TESTS=1 BENCH=1 BUILD=$ROOT/build-gpu
while [ $# -gt 0 ]; do
    case "$1" in
    --fetch-debs) fetch_debs; exit 0 ;;
    --quick) QUICK=1 ;;
    --no-tests) TESTS=0 ;;
    --no-bench) BENCH=0 ;;
    --build-dir) shift; BUILD=$(realpath -m "${1:?--build-dir needs a directory}") ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
    shift
done

RES=${OUT:-$BUILD/gpu-check}
mkdir -p "$RES" "$BUILD"
SUMMARY=$RES/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
declare -a ROWS=()
row() { ROWS+=("$(printf '%-34s %-8s %s' "$1" "$2" "$3")"); }
FAILED=0

# ---- what is here --------------------------------------------------------------
say "== gpu-check $(date -u +%FT%TZ) in $ROOT"
say "os:       $( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -s) ($(uname -m)), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) memory"
for t in gcc cmake make ninja dpkg python3 pkg-config; do
    if command -v "$t" >/dev/null; then
        say "$(printf '%-9s' "$t:") $("$t" --version 2>&1 | head -1)"
    else
        say "$(printf '%-9s' "$t:") not found"
    fi
done
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [ -x "$NVCC" ]; then say "nvcc:     $NVCC, $("$NVCC" --version | grep -o 'release [0-9.]*')"; else say "nvcc:     not found"; NVCC=""; fi
GPU_ARCH=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    say "gpu:      $(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | head -1)"
    GPU_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
else
    say "gpu:      none (nvidia-smi absent or finds no device)"
fi
for so in "${BASE_SONAMES[@]}"; do
    ldconfig -p 2>/dev/null | grep -q "^\s*$so " || say "warning:  $so not found by ldconfig (the carried packages need it)"
done
[ -n "$NVCC" ] || { say "gpu-check: no CUDA compiler: cannot build the CUDA paths"; exit 2; }
command -v gcc >/dev/null && command -v cmake >/dev/null || { say "gpu-check: gcc and cmake are required"; exit 2; }

# ---- dependencies: carried packages unpacked into a prefix ---------------------------
PKGCONF=$(command -v pkg-config || true)
if ls "$DEBDIR"/*.deb >/dev/null 2>&1; then
    PREFIX=${LAMINA_GPU_PREFIX:-/tmp/lamina-gpu-deps}
    rm -rf "$PREFIX" && mkdir -p "$PREFIX"
    unpack() { # dpkg -x, or by hand: a .deb is an ar archive holding data.tar.*
        if command -v dpkg >/dev/null; then dpkg -x "$1" "$PREFIX"; return; fi
        local t; t=$(mktemp -d)
        (cd "$t" && ar x "$1" && tar -xf data.tar.* -C "$PREFIX"); local rc=$?
        rm -rf "$t"; return $rc
    }
    for f in "$DEBDIR"/*.deb; do unpack "$f" || { say "gpu-check: cannot unpack $f"; exit 1; }; done
    LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
    # the .pc files name /usr: make them name the prefix
    for pc in "$LIBDIR"/pkgconfig/*.pc "$PREFIX"/usr/share/pkgconfig/*.pc; do
        [ -f "$pc" ] || continue
        sed -i -E "s#^([A-Za-z_]+ *= *)/usr#\\1$PREFIX/usr#; s#(-[IL])/usr/#\\1$PREFIX/usr/#g" "$pc"
    done
    # microhttpd names gnutls for static links only; we link dynamically and do not carry gnutls-dev
    sed -i '/^Requires.private:.*gnutls/d' "$LIBDIR/pkgconfig/libmicrohttpd.pc" 2>/dev/null
    # absolute symlinks (lib.so -> /lib/...) must point into the prefix
    find "$PREFIX" -type l -lname '/*' | while read -r l; do
        t=$(readlink "$l"); [ -e "$PREFIX$t" ] && ln -sfn "$PREFIX$t" "$l"
    done
    export PKG_CONFIG_LIBDIR=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig
    unset PKG_CONFIG_PATH
    PKGCONF=$PREFIX/usr/bin/pkgconf
    DEPS_LD=$LIBDIR:$PREFIX/lib/x86_64-linux-gnu
    export CMAKE_PREFIX_PATH=$PREFIX/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
    export UCX_MODULE_DIR=$LIBDIR/ucx
    export PATH=$PATH:$PREFIX/usr/bin
    say "deps:     $(ls "$DEBDIR"/*.deb | wc -l) packages from $DEBDIR unpacked into $PREFIX (pkg-config sees only them)"
    # pkgconf itself loads libpkgconf from the prefix
    PKGCONF_RUN=(env "LD_LIBRARY_PATH=$DEPS_LD" "$PKGCONF")
else
    DEPS_LD=""
    PKGCONF_RUN=("$PKGCONF")
    say "deps:     no $DEBDIR: the system's libraries (scripts/gpu-check.sh --fetch-debs prepares them)"
fi
[ -n "$PKGCONF" ] || { say "gpu-check: no pkg-config and no carried pkgconf"; exit 2; }
for m in "${PC_MODULES[@]}"; do
    v=$("${PKGCONF_RUN[@]}" --modversion "$m" 2>/dev/null) || { say "missing:  $m (pkg-config)"; FAILED=1; continue; }
    say "$(printf '%-9s' "$m:") $v in $("${PKGCONF_RUN[@]}" --variable=libdir "$m")"
done
run_deps() { env ${DEPS_LD:+LD_LIBRARY_PATH=$DEPS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} "$@"; }

# ---- build ------------------------------------------------------------------------------
JOBS=${LAMINA_JOBS:-$(nproc)}
ARCHS=${GPU_ARCH:-80;90}
say "== build: $BUILD, CUDA architectures $ARCHS, $JOBS jobs"
t0=$(date +%s)
# pkgconf runs through a wrapper so that it finds its library in the prefix
WRAP=$BUILD/pkg-config-wrapper
printf '#!/bin/sh\nexec %s "$@"\n' "$(printf '%q ' "${PKGCONF_RUN[@]}")" >"$WRAP" && chmod +x "$WRAP"
if cmake -S "$ROOT" -B "$BUILD" -DLAMINA_CUDA=ON -DLAMINA_WERROR=ON "-DLAMINA_CUDA_ARCHS=$ARCHS" \
        -DCMAKE_CUDA_COMPILER="$NVCC" -DPKG_CONFIG_EXECUTABLE="$WRAP" >"$RES/build.log" 2>&1 &&
   cmake --build "$BUILD" -j "$JOBS" >>"$RES/build.log" 2>&1; then
    row "build (LAMINA_CUDA=ON, -Werror)" "ok" "$(( $(date +%s) - t0 )) s"
else
    row "build (LAMINA_CUDA=ON, -Werror)" "FAILED" "see build.log"
    tail -30 "$RES/build.log"
    FAILED=1 TESTS=0 BENCH=0
fi
if [ -x "$BUILD/attention_node/lamina-attention-node" ]; then
    nf=$(run_deps ldd "$BUILD/attention_node/lamina-attention-node" "$BUILD/tools/bench/lamina-bench" | grep -c 'not found')
    [ "$nf" = 0 ] || { say "loader:   $nf libraries not found:"; run_deps ldd "$BUILD/tools/bench/lamina-bench" | grep 'not found' | tee -a "$SUMMARY"; FAILED=1; }
fi

# ---- the model -----------------------------------------------------------------------------
MODEL=${LAMINA_MODEL_DIR:-$HOME/.cache/lamina}/SmolLM2-135M-Instruct.Q4_1.gguf
MODELS=$BUILD/gpu-check-models
BIG=$MODELS/llama3-8b-config.gguf
if [ ! -r "$MODEL" ]; then
    # suites that need the real file skip visibly; tests/cuda_backend writes its own synthetic one
    export LAMINA_ALLOW_NO_MODEL=1
    [ $BENCH = 1 ] || say "model:    SmolLM2 missing: the CUDA suites use a synthetic model of its shape"
fi
if [ $BENCH = 1 ]; then
    mkdir -p "$MODELS"
    if [ -r "$MODEL" ]; then
        say "model:    $MODEL"
    else
        MODEL=$MODELS/smollm2-shaped-synthetic.gguf
        "$BUILD/tests/cuda_backend/lamina-synth-model" "$MODEL" smollm2 >/dev/null || FAILED=1
        say "model:    SmolLM2 missing: synthetic model of its shape with random Q4_1 weights ($MODEL)"
    fi
    "$BUILD/tests/cuda_backend/lamina-synth-model" "$BIG" llama3-8b >/dev/null || FAILED=1
fi

# ---- tests -----------------------------------------------------------------------------------
if [ $TESTS = 1 ]; then
    say "== ctest -L cuda"
    t0=$(date +%s)
    # verbose: the suites print what they skipped and their agreement figures
    if run_deps ctest --test-dir "$BUILD" -L cuda -V --timeout 900 >"$RES/ctest.log" 2>&1; then st=ok; else st=FAILED; FAILED=1; fi
    row "tests (ctest -L cuda)" "$st" "$(grep -E 'tests passed' "$RES/ctest.log" | head -1), $(( $(date +%s) - t0 )) s"
    grep -hE 'SKIPPED|NOTE|top-1|GPU:|FAILED|Assertion' "$RES/ctest.log" | sed -E 's/^[0-9]+: *//; s/^ */  /' |
        sort -u | head -40 | tee -a "$SUMMARY"
fi

# ---- benchmarks ----------------------------------------------------------------------------
bench() { # name timeout args...
    local name=$1 limit=$2; shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== lamina-bench $*" >>"$RES/bench.log"
    run_deps timeout "$limit" "$BUILD/tools/bench/lamina-bench" "$@" --json "$RES/$name.json" >>"$RES/bench.log" 2>&1
    rc=$?
    case $rc in
    0) row "bench $name" "ok" "$(( $(date +%s) - t0 )) s" ;;
    3) row "bench $name" "no GPU" "$(tail -1 "$RES/bench.log" | sed 's/.*: //' | cut -c1-60)" ;;
    124) row "bench $name" "TIMEOUT" "after $limit s"; FAILED=1 ;;
    *) row "bench $name" "FAILED" "exit $rc, see bench.log"; FAILED=1 ;;
    esac
}
if [ $BENCH = 1 ]; then
    Q=(); [ $QUICK = 1 ] && Q=(--quick)
    bench gpu-attention 300 gpu-attention "${Q[@]}"
    bench gpu-dense 300 gpu-dense --model "$MODEL" "${Q[@]}"
    bench gpu-e2e-smollm2 600 gpu-e2e --model "$MODEL" "${Q[@]}"
    if [ $QUICK = 1 ]; then
        bench gpu-e2e-llama3-8b 600 gpu-e2e --model "$BIG" --random-weights --batch 2 --ctx 4096 --quick
    else
        bench gpu-e2e-llama3-8b 900 gpu-e2e --model "$BIG" --random-weights --batch 2 --ctx 4096,16384,32768
    fi
fi

# ---- the table -------------------------------------------------------------------------------
say "== summary"
for r in "${ROWS[@]}"; do say "$r"; done
if [ $BENCH = 1 ] && command -v python3 >/dev/null; then
    python3 - "$RES" <<'EOF' | tee -a "$SUMMARY"
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "gpu-*.json"))):
    try:
        doc = json.load(open(f))
    except Exception:
        continue
    for r in doc.get("results", []):
        keys = [k for k in ("context", "batch", "splits") if k in r]
        where = " ".join(f"{k}={r[k]}" for k in keys)
        ratio = r.get("ratio")
        extra = f"  offload {r['offload_decode_tps']:.1f} tok/s" if "offload_decode_tps" in r else ""
        print(f"{doc['mode']:<14} {r.get('name',''):<24} {r['metric']:<24} {r['value']:>10.1f} "
              f"{'' if ratio is None else f'ratio {ratio:.3f}':<12} {where}{extra}")
EOF
fi
say "results in $RES"
exit $FAILED
