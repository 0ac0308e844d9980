#!/usr/bin/env bash
# Issue 19, done-means 2: what the distilled hybrid *generates*, against its teacher, through
# `m1 eval` and `m1 compare`. Runs in the background on the GPU machine (started by
# studies/device_gen_study.sh launch, in its own process session so it outlives the call):
#
#   teacher (the GGUF, as the all-attention network)  -- evals start at once, beside the distillation
#   staged hybrid: studies/distill_cli.py (m1 convert --init calibrated, m1 distill --stages align,kl)
#                  to 40M tokens, then the same evals
#   m1 compare teacher -> staged hybrid, one per eval
#
# Evals (the issue's): the model's chat template and M1's prompt (m1 eval's default), on GSM8K test
# (all 1,319 greedy; the first 500 at T 0.7, n 64) and MATH500 (T 0.7, n 16). Each finished step
# writes $G/done.<step>; the log is $G/log. A CPU smoke run: M1_WORK=<dir> DISTILL_EXTRA="--rows 4 ..."
# EVAL_EXTRA="--limit 2 --n 2 ..." (appended options win).
set -uo pipefail
W=${M1_WORK:-/tmp/m1cli}
G=$W/gen
mkdir -p "$G"
M1=(python3 -m m1.cli)
say() { echo "[$(date -u +%H:%M:%S)] $*" >>"$G/log"; }

EVALS=(
  "gsm8k_greedy --benchmark gsm8k --n 1 --temperature 0 --max-tokens 512"
  "gsm8k_t07 --benchmark gsm8k --limit 500 --n 64 --temperature 0.7 --max-tokens 512"
  "math500_t07 --benchmark math500 --n 16 --temperature 0.7 --max-tokens 1024"
)

evals() {  # name model [m1 eval options for every eval...]
  local name=$1 model=$2
  shift 2
  for e in "${EVALS[@]}"; do
    local tag=${e%% *} opts=${e#* }
    say "eval $name $tag: start"
    # shellcheck disable=SC2086
    "${M1[@]}" eval --model "$model" --data-dir "$W" --max-batch-size 512 --out "$G/$name/$tag" $opts "$@" ${EVAL_EXTRA:-} \
      >"$G/$name.$tag.log" 2>&1
    say "eval $name $tag: rc $? ($(grep -o 'pass@1 [0-9.]*.*problems' "$G/$name.$tag.log" | tail -1))"
    touch "$G/done.$name.$tag"
  done
}

compare() {  # tag
  local tag=$1
  while [ ! -f "$G/done.teacher.$tag" ] || [ ! -f "$G/done.staged.$tag" ]; do sleep 5; done
  "${M1[@]}" compare --reference "$G/teacher/$tag" --candidate "$G/staged/$tag" --out "$G/compare/$tag" >"$G/compare.$tag.log" 2>&1
  say "compare $tag: rc $?"
}

say "start"
evals teacher "$W/smollm2.gguf" --memory-budget-gb 16 &
teacher=$!
python3 studies/distill_cli.py --recipe staged --teacher "$W/smollm2.gguf" --data "$W/train_text.jsonl.gz" \
  --math500 "$W/math500.jsonl" --work "$W" --budget 3000 --eval-reserve 60 ${DISTILL_EXTRA:-} >"$G/distill.log" 2>&1
say "distill: rc $? ($(grep -c RECORD "$G/distill.log") records)"
touch "$G/done.distill"
if [ -f "$W/staged/run/final/config.json" ]; then
  evals staged "$W/staged/run/final" --memory-budget-gb 24 &
  staged=$!
  for e in "${EVALS[@]}"; do compare "${e%% *}"; done
  wait "$staged"
else
  say "no final staged model: evals skipped"
fi
wait "$teacher"
say "end"
touch "$G/done.all"
