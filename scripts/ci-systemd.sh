#!/usr/bin/env bash
# Checks deploy/ as installed: installs the build into a temporary prefix,
# then
#   - systemd-analyze verify on both units (the template and an instance):
#     any message fails, because systemd 252 returns 0 after "ignoring"
#     an unknown key or a bad value;
#   - the units' ExecStart names the installed binaries;
#   - systemd-sysusers --dry-run on the sysusers.d entry (into a scratch root);
#   - both programs load the example configs (--print-config), and the
#     compute unit's TimeoutStopSec leaves room for compute.conf's drain-timeout.
#   scripts/ci-systemd.sh BUILD_DIR      (ctest runs it as deploy_units)
# Exits 77 (ctest: skipped, with the reason printed) without systemd-analyze.
set -euo pipefail
BUILD=${1:?usage: $0 BUILD_DIR}

if ! command -v systemd-analyze > /dev/null; then
    echo "SKIP: systemd-analyze not found (Debian: apt-get install systemd)"
    exit 77
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lamina-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PREFIX=$WORK/prefix
cmake --install "$BUILD" --prefix "$PREFIX" > "$WORK/install.log" || {
    cat "$WORK/install.log"
    exit 1
}
UNITS=$PREFIX/lib/systemd/system
EX=$PREFIX/share/lamina/examples
failed=0
fail() {
    echo "FAIL: $*"
    failed=1
}

# systemd-analyze verify: silent and exit 0, or a failure with its output.
verify() {
    local out rc=0
    out=$(systemd-analyze verify "$@" 2>&1) || rc=$?
    if [ "$rc" != 0 ] || [ -n "$out" ]; then
        fail "systemd-analyze verify $* (exit $rc):"
        printf '%s\n' "$out"
    else
        echo "ok: systemd-analyze verify $(basename "$1")"
    fi
}

AN=$UNITS/lamina-attention-node@.service
CN=$UNITS/lamina-compute-node.service
for f in "$AN" "$CN" "$PREFIX/lib/sysusers.d/lamina.conf" "$EX/attention-0.conf" "$EX/compute.conf"; do
    [ -f "$f" ] || fail "not installed: $f"
done
[ "$failed" = 0 ] || exit 1

verify "$AN"
cp "$AN" "$WORK/lamina-attention-node@0.service"
verify "$WORK/lamina-attention-node@0.service"
verify "$CN"

grep -q "^ExecStart=$PREFIX/bin/lamina-attention-node --config /etc/lamina/attention-%i.conf\$" "$AN" ||
    fail "$AN: ExecStart does not name $PREFIX/bin/lamina-attention-node"
grep -q "^ExecStart=$PREFIX/bin/lamina-compute-node --config /etc/lamina/compute.conf\$" "$CN" ||
    fail "$CN: ExecStart does not name $PREFIX/bin/lamina-compute-node"
for u in "$AN" "$CN"; do
    for want in Type=notify User=lamina LimitMEMLOCK=infinity NoNewPrivileges=yes ProtectSystem=strict; do
        grep -q "^$want\$" "$u" || fail "$(basename "$u"): no $want"
    done
done

if command -v systemd-sysusers > /dev/null; then
    mkdir -p "$WORK/root"
    if out=$(systemd-sysusers --dry-run --root="$WORK/root" "$PREFIX/lib/sysusers.d/lamina.conf" 2>&1); then
        echo "ok: systemd-sysusers --dry-run lamina.conf"
    else
        fail "systemd-sysusers rejects lamina.conf:"
        printf '%s\n' "$out"
    fi
else
    echo "note: systemd-sysusers not found, sysusers.d entry not checked"
fi

# The example configs load; --print-config shows what each program read.
if "$PREFIX/bin/lamina-attention-node" --config "$EX/attention-0.conf" --print-config > "$WORK/an.txt" 2>&1 &&
    grep -q '^shard = "0/2"$' "$WORK/an.txt"; then
    echo "ok: lamina-attention-node --config attention-0.conf --print-config"
else
    fail "lamina-attention-node does not load attention-0.conf:"
    cat "$WORK/an.txt"
fi
if "$PREFIX/bin/lamina-compute-node" --config "$EX/compute.conf" --print-config > "$WORK/cn.txt" 2>&1 &&
    grep -q '^attention = "10.0.0.21:7400,10.0.0.22:7400"$' "$WORK/cn.txt"; then
    echo "ok: lamina-compute-node --config compute.conf --print-config"
    drain=$(sed -n 's/^drain-timeout = \([0-9]*\)$/\1/p' "$WORK/cn.txt")
    stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$CN")
    if [ -z "$drain" ] || [ -z "$stop" ] || [ "$stop" -lt $((drain + 10)) ]; then
        fail "TimeoutStopSec=${stop:-?}s leaves no room for drain-timeout = ${drain:-?} (need >= drain + 10 s)"
    fi
else
    fail "lamina-compute-node does not load compute.conf:"
    cat "$WORK/cn.txt"
fi

exit "$failed"
