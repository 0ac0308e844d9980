#!/usr/bin/env bash
# Issue 19, done-means 1: the runs the staged 40M result is compared against, through `m1 convert` +
# `m1 distill` (studies/distill_cli.py), one distillation at a time (two of this size do not fit one
# 80 GB GPU: studies/results/distill_cli_2026-12-06b/README.md). Runs in the background on the GPU
# machine, started by `STUDY=recipe_study.sh bash studies/device_gen_study.sh launch N`.
#
#   1. M1's recipe (--init attention, reverse KL) to 40M tokens, same text, order and schedule as the
#      staged run: the equal-token KL comparison.
#   2. Placement and shape at an equal, smaller budget (RECIPE_SMALL_TOKENS, default 5M), staged recipe:
#      uniform state 16 (the reference), the head-sized shape (9 x 64, state 64), measured placement auto:6.
#
# RECIPE_RUNS picks runs by name (default: all four); the 2026-12-06 session finished m1-paper and staged-5M.
# Each run appends its held-out records to $W/records.jsonl; logs go to $W/gen/<run>.log, metrics to
# $W/res/distill/. A CPU smoke run: M1_WORK=<dir> RECIPE_EXTRA="--rows 4 --length 32 --heldout-limit 4 ..."
set -uo pipefail
W=${M1_WORK:-/tmp/m1cli}
G=$W/gen
mkdir -p "$G"
say() { echo "[$(date -u +%H:%M:%S)] $*" >>"$G/log"; }
SMALL=${RECIPE_SMALL_TOKENS:-5e6}
RUNS=${RECIPE_RUNS:-m1-paper staged-5M staged-head-5M staged-auto6-5M}  # a subset continues an earlier session
M1_BUDGET=${RECIPE_M1_BUDGET:-1000}

run() {  # name budget [distill_cli options...]
  local name=$1 budget=$2
  shift 2
  case " $RUNS " in *" $name "*) ;; *) return 0 ;; esac
  say "$name: start"
  # shellcheck disable=SC2086
  python3 studies/distill_cli.py --teacher "$W/smollm2.gguf" --data "$W/train_text.jsonl.gz" --math500 "$W/math500.jsonl" \
    --work "$W" --out "$W/res/distill" --name "$name" --budget "$budget" "$@" ${RECIPE_EXTRA:-} >"$G/$name.log" 2>&1
  say "$name: rc $? ($(grep -c RECORD "$G/$name.log") records; $(grep 'distill call' "$G/$name.log" | tail -1))"
}

small() {
  run staged-5M 420 --recipe staged --tokens "$SMALL"
  run staged-head-5M 420 --recipe staged --tokens "$SMALL" --shape head
  run staged-auto6-5M 600 --recipe staged --tokens "$SMALL" --attention-layers auto:6
}
# Each distillation peaks at about 40 GB: two at once only where the GPU has room (an H200's 139 GB).
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
say "start (runs: $RUNS; small runs at $SMALL tokens; GPU memory ${mem:-none} MiB)"
if [ "${mem:-0}" -gt 100000 ]; then
  small &
  run m1-paper "$M1_BUDGET" --recipe m1-paper --tokens 40e6 --eval-reserve 90
  wait
else
  run m1-paper "$M1_BUDGET" --recipe m1-paper --tokens 40e6 --eval-reserve 90
  small
fi
say "end"
touch "$G/done.all"
