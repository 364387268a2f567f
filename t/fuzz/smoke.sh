#!/usr/bin/env bash
# One bounded libFuzzer run: smoke.sh FUZZER CORPUS_DIR [SECONDS].  The corpus is copied to a
# scratch directory (the seed corpus in the repository is not modified); a crashing input is kept
# in t/fuzz/crashes/ next to this script.  Used by the meson 'fuzz' suite and by run.sh.
set -euo pipefail
fuzzer=$1 corpus=$2 secs=${3:-${FUZZ_SECONDS:-15}}
here=$(cd "$(dirname "$0")" && pwd)
name=$(basename "$fuzzer")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -d "$corpus" ] && cp -r "$corpus/." "$work/"
mkdir -p "$here/crashes"
if "$fuzzer" -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 \
     -artifact_prefix="$here/crashes/$name-" "$work" >"$work.log" 2>&1; then
  echo "$name: ok ($(grep -o 'Done [0-9]* runs' "$work.log" | tail -1))"
  rm -f "$work.log"
else
  echo "$name: FAILED"
  tail -40 "$work.log"
  rm -f "$work.log"
  exit 1
fi
