#!/usr/bin/env bash
# Build the libFuzzer targets with clang (build-fuzz/) and run each for FUZZ_SECONDS (default
# 15) on its seed corpus through the meson 'fuzz' suite.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
command -v clang >/dev/null || { echo "fuzz: clang is not installed (apt-get install clang)"; exit 1; }
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Dbuildtype=debugoptimized -Db_lundef=false
fi
ninja -C build-fuzz
exec meson test -C build-fuzz --suite fuzz --print-errorlogs
