#!/usr/bin/env bash
# One GPU-machine call of the demo sweep on its 16 CPU cores: the variants of
# studies/demo_sweep.py's demo mode, started from a carried demo directory whose early stages
# are done (BASE), cut off after LIMIT seconds, everything gathered into $OUT.
#
#   run(command="bash studies/device_demo_sweep.sh .sweep/base 520 --set v1:... --set v2:...",
#       carry=[".whl", ".sweep/base"], timeout_s=600)
set -uo pipefail
BASE=$1; LIMIT=$2; shift 2
. studies/device_env.sh || exit 1
nproc; lscpu | grep -i "model name"
timeout "$LIMIT" python3 studies/demo_sweep.py demo --out /tmp/sweep --base "$BASE" --jobs 8 --threads 2 "$@" 2>&1 | tee "$OUT/sweep.txt"
python3 studies/demo_sweep.py collect --out /tmp/sweep > "$OUT/collect.json"
for f in /tmp/sweep/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v "^\s*$" | tail -25; done > "$OUT/logs_tail.txt" 2>&1
cp /tmp/sweep/demo_results.json "$OUT/" 2>/dev/null || true
