#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for FUZZ_SECONDS (default 20) on its corpus
# (t/fuzz/corpus/<target>/, grown in a scratch copy).  Exit non-zero if any target finds a crash;
# the crashing input is left in t/fuzz/crashes/.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
secs=${FUZZ_SECONDS:-20}
command -v clang >/dev/null || { echo "fuzz: clang is not installed (apt-get install clang)"; exit 1; }
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Dbuildtype=debugoptimized -Db_lundef=false >/dev/null
fi
ninja -C build-fuzz >/dev/null
mkdir -p t/fuzz/crashes
rc=0
for t in http json raft_msg lock_cmd swim config; do
  work=$(mktemp -d)
  [ -d "t/fuzz/corpus/$t" ] && cp -r "t/fuzz/corpus/$t/." "$work/"
  if ./build-fuzz/t/fuzz/fuzz_$t -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 \
       -artifact_prefix="t/fuzz/crashes/$t-" "$work" >"$work.log" 2>&1; then
    echo "fuzz $t: ok ($(grep -o 'Done [0-9]* runs' "$work.log" | tail -1))"
  else
    echo "fuzz $t: FAILED"; tail -30 "$work.log"; rc=1
  fi
  rm -rf "$work" "$work.log"
done
exit $rc
