#!/usr/bin/env bash
# On the GPU machine: issue 20's reasoning workload (`m1 bench --workload reasoning`), one piece at a time, in its
# own process session so it goes on between back-to-back calls of at most 10 minutes (a llama piece at 2,048
# requests of mean ~4K tokens takes longer than one call). No wheels needed (the image's torch and transformers).
#   M1_COMMIT=<sha> RUN_ID=<id> bash studies/device_reasoning.sh launch NAME MODEL POLICY SLOTS... [-- BENCH ARGS]
#       starts one piece: MODEL (m1-3b, llama-3.2-3b, ...) under POLICY (on_demand or reserve) at each slot count,
#       records to /tmp/m1reason/NAME/ (one folder a piece, so pieces never overwrite each other's records), then
#       polls for up to 540 s
#   bash studies/device_reasoning.sh poll [SECONDS]     waits until every launched piece is done or SECONDS pass,
#       prints their progress, and brings back every piece's folder as $OUT/reasoning.tgz (also when unfinished)
#   Pieces launched while one runs wait for it (one GPU), and run in the order they were launched. To queue several
#   in one call (the most important first), launch all but the last
#   with POLL_SECONDS=0.
# Every piece of one comparison shares RUN_ID and the workload flags (same requests, lengths and memory), e.g.
#   launch m1_od   m1-3b        on_demand 256 512 768 -- --requests 2048 --memory-gb 79
#   launch ll_od   llama-3.2-3b on_demand 64 128 256  -- --requests 2048 --memory-gb 79
# M1_REASONING_EXTRA (environment) is added to every piece's flags: "--device cpu --tiny ..." smoke-tests this
# script on a CPU (tests/bench/test_device_reasoning.py).
set -uo pipefail
W=${M1_REASONING_WORK:-/tmp/m1reason}
OUT=${OUT:?set OUT (the device machine sets it)}
mkdir -p "$W"
what=${1:-poll}
[ $# -gt 0 ] && shift

pieces_left() {  # pieces launched but not finished
  local n=0
  for d in "$W"/*/; do [ -f "$d/launched" ] && [ ! -f "$d/done" ] && n=$((n + 1)); done
  echo "$n"
}

if [ "$what" = launch ]; then
  [ $# -ge 4 ] || { echo "usage: device_reasoning.sh launch NAME MODEL POLICY SLOTS... [-- BENCH ARGS]"; exit 2; }
  name=$1 model=$2 policy=$3
  shift 3
  slots=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do slots+=("$1"); shift; done
  [ $# -gt 0 ] && shift  # the "--"
  case "$name" in *[!A-Za-z0-9_.-]*|"") echo "NAME: letters, digits, _ . - only"; exit 2 ;; esac
  case " $* " in *" --requests "*) ;; *) echo "give --requests after --: every piece of a comparison runs the same requests"; exit 2 ;; esac
  P=$W/$name
  [ -e "$P" ] && { echo "piece $name exists in $W (pick another NAME)"; exit 2; }
  mkdir -p "$P/code" && cp -r src "$P/code/"
  run_id=${RUN_ID:-reasoning-$(date -u +%Y%m%d)}
  # --reasoning-batch serves an all-attention model too (its own flag is only needed when both models share a call)
  # shellcheck disable=SC2206
  cmd=("${PYTHON:-python3}" -m m1 bench --workload reasoning --models "$model" --kv-policies "$policy" --reasoning-batch "${slots[@]}"
       --run-id "$run_id" --out "$P/records" "$@" ${M1_REASONING_EXTRA:-})
  printf '%q ' "${cmd[@]}" >"$P/command"
  echo >>"$P/command"
  # one GPU: a piece starts when every piece launched before it is done (launch order), then takes the lock
  seq=$(cat "$W/next_seq" 2>/dev/null || echo 0)
  echo $((seq + 1)) >"$W/next_seq"
  echo "$seq" >"$P/seq"
  cat >"$P/run.sh" <<RUN
for d in "$W"/*/; do
  [ -f "\$d/launched" ] && [ -f "\$d/seq" ] && [ "\$(cat "\$d/seq")" -lt $seq ] || continue
  while [ ! -f "\$d/done" ]; do sleep 1; done
done
exec 9>"$W/gpu.lock"
flock 9
date -u +%FT%TZ >"$P/started"
cd "$P/code"
M1_COMMIT="${M1_COMMIT:-unknown}" PYTHONPATH="$P/code/src" PYTHONUNBUFFERED=1 $(cat "$P/command") >"$P/log" 2>&1
echo \$? >"$P/rc"
date -u +%FT%TZ >"$P/done"
RUN
  touch "$P/launched"
  setsid nohup bash "$P/run.sh" </dev/null >/dev/null 2>&1 &
  echo "launched $name: $(cat "$P/command")"
  what=poll
  set -- "${POLL_SECONDS:-540}"
fi

if [ "$what" = poll ]; then
  limit=${1:-540}
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$limit" ] && [ "$(pieces_left)" -gt 0 ]; do sleep 5; done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader
  for d in "$W"/*/; do
    [ -f "$d/launched" ] || continue
    n=$(basename "$d")
    state="queued"; [ -f "$d/started" ] && state="running since $(cat "$d/started")"
    [ -f "$d/done" ] && state="done (rc $(cat "$d/rc"))"
    echo "== $n: $state"
    [ -f "$d/log" ] && grep -E "tok/s over|reasoning run of|Error|error" "$d/log" | tail -n 6
  done
  echo "pieces left: $(pieces_left)"
  (cd "$W" && tar czf "$OUT/reasoning.tgz" --exclude=code ./*/ 2>/dev/null)
  exit 0
fi
echo "usage: device_reasoning.sh launch NAME MODEL POLICY SLOTS... [-- BENCH ARGS] | poll [SECONDS]"
exit 2
