#!/usr/bin/env bash
# Install dependencies, build and run the whole test suite (meson test).
#   t/test.sh            normal build in ./build
#   t/test.sh --asan     AddressSanitizer + UndefinedBehaviorSanitizer build in ./build-asan
# Extra arguments go to `meson test` (e.g. --suite raft).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

dir=build
opts=()
if [ "${1:-}" = "--asan" ]; then
  shift
  dir=build-asan
  opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
fi

"$top/t/deps.sh"
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" "${opts[@]}"
fi
ninja -C "$dir"
exec meson test -C "$dir" --print-errorlogs --num-processes 2 "$@"
