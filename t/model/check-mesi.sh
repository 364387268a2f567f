#!/bin/sh
# Model-checks t/model/mesi.pml with SPIN: an exhaustive safety search (3 caches, 1 key, one request
# per cache, unordered network) that fails on any assertion (SWMR, data-value, directory coverage,
# stuck state) or invalid end state.  MESI_DEEP=1 adds bounded bitstate searches of larger
# configurations (2 keys; 2 requests per cache), which are NOT exhaustive.
# Usage: t/model/check-mesi.sh        (needs spin and cc; exits non-zero on any error)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
command -v spin >/dev/null || { echo "check-mesi: spin not installed (Debian package spin)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cp "$here/mesi.pml" .

# check NAME SPIN_DEFINES CC_DEFINES PAN_ARGS SECONDS EXHAUSTIVE
check() {
    spin -a $2 mesi.pml >/dev/null
    cc -O2 -w $3 -o pan pan.c
    if ! out=$(timeout "$5" ./pan $4 2>&1); then
        echo "$out"
        echo "FAIL $1: pan failed or ran past $5 s"
        exit 1
    fi
    if ! echo "$out" | grep -q "errors: 0"; then
        echo "$out"
        [ -f mesi.pml.trail ] && spin -t -p $2 mesi.pml | tail -60
        echo "FAIL $1: the model violates an invariant (trail above)"
        exit 1
    fi
    if [ "$6" = yes ] && echo "$out" | grep -q "Search not completed\|MEMLIM"; then
        echo "$out"
        echo "FAIL $1: exhaustive search did not complete"
        exit 1
    fi
    echo "ok - $1:$(echo "$out" | grep 'states, stored')"
}

check "3 caches, 1 key, exhaustive" "-DK=1 -DREQ=1 -DMAXV=3" "-DSAFETY -DCOLLAPSE -DMEMLIM=2048" \
    "-m2000000 -w24" 240 yes
if [ "${MESI_DEEP:-0}" = 1 ]; then
    check "3 caches, 2 keys, bitstate" "-DK=2 -DREQ=1 -DMAXV=2" "-DSAFETY -DBITSTATE" \
        "-m5000000 -w30" 600 no
    check "3 caches, 2 requests each, bitstate" "-DK=1 -DREQ=2 -DMAXV=2" "-DSAFETY -DBITSTATE" \
        "-m5000000 -w30" 600 no
fi
