#!/usr/bin/env bash
# Run the deterministic simulations (Raft, lock table, SWIM, MESI) over fresh seed ranges for as
# long as you give it: t/soak-sim.sh [SECONDS] [BUILD_DIR].  Each round runs every simulation with
# DS_SEEDS seeds starting where the previous round stopped (DS_SEED_BASE); a failure prints the
# seed and the command that replays it, and stops the soak.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-600}
build=${2:-$top/build}
per=${DS_SEEDS:-2000}
sims=(t/unit/raft/test_raft_sim t/unit/lock/test_lock_model t/unit/gossip/test_swim_sim
      t/unit/cache/test_mesi_sim)
[ -f "$build/build.ninja" ] || { echo "soak: no meson build in $build (meson setup $build)"; exit 2; }
ninja -C "$build" >/dev/null
end=$((SECONDS + secs))
base=${DS_SEED_BASE:-1000000}
rounds=0
while [ $SECONDS -lt $end ]; do
  for s in "${sims[@]}"; do
    if ! DS_SEEDS=$per DS_SEED_BASE=$base "$build/$s" >/tmp/dsyncd-soak.$$ 2>&1; then
      echo "soak: $s failed in seeds $base..$((base + per - 1)):"; tail -20 /tmp/dsyncd-soak.$$
      rm -f /tmp/dsyncd-soak.$$; exit 1
    fi
  done
  rounds=$((rounds + 1)); base=$((base + per))
  echo "soak: round $rounds ok (seeds up to $base, $((end - SECONDS)) s left)"
done
rm -f /tmp/dsyncd-soak.$$
echo "soak: $rounds rounds x ${#sims[@]} simulations x $per seeds, no failure"
