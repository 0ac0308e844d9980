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
# EVAL_EXTRA="--limit 2 --n 2 --memory-budget-gb 2 ..." (appended options win). The on-policy stage's smoke run
# (2 CPU cores, 3 min): EVAL_SET=lean TEACHER_EVALS=0 PLAIN_EVALS=0 ONPOLICY_STEPS=2 ONPOLICY_EXTRA="--per-device-batch-size 2
# --data-limit 8 --max-completion-length 16 --num-threads 2" DISTILL_EXTRA="--rows 2 --length 64 --tokens 512
# --heldout-limit 2 --calibration-seconds 5 --budget 300" EVAL_EXTRA="--limit 2 --max-tokens 16 --memory-budget-gb 2".
set -uo pipefail
W=${M1_WORK:-/tmp/m1cli}
G=$W/gen
mkdir -p "$G"
M1=(python3 -m m1.cli)
say() { echo "[$(date -u +%H:%M:%S)] $*" >>"$G/log"; }

# Two-digit additions first: the one benchmark here where the teacher is above chance (studies/addition_problems.py)
python3 studies/addition_problems.py "$W/addition.jsonl" --n 500 --seed 0
EVALS=(
  "add_greedy --benchmark $W/addition.jsonl --n 1 --temperature 0 --max-tokens 256"
  "add_t07 --benchmark $W/addition.jsonl --n 16 --temperature 0.7 --max-tokens 256"
  "gsm8k_greedy --benchmark gsm8k --n 1 --temperature 0 --max-tokens 512"
  "gsm8k_t07 --benchmark gsm8k --limit 500 --n 64 --temperature 0.7 --max-tokens 512"
  "math500_t07 --benchmark math500 --n 16 --temperature 0.7 --max-tokens 1024"
)
# EVAL_SET=lean keeps the additions and GSM8K greedy: the sampled GSM8K and MATH500 runs cost most of a session's
# GPU time and the 135M teacher is at chance on them (results/gen_study_2026-12-07/)
[ "${EVAL_SET:-all}" = lean ] && EVALS=("${EVALS[@]:0:3}")
# EVAL_SET=add: the additions only, for sessions with little GPU time
[ "${EVAL_SET:-all}" = add ] && EVALS=("${EVALS[@]:0:2}")

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

compare() {  # candidate tag
  local cand=$1 tag=$2
  while [ ! -f "$G/done.teacher.$tag" ] || [ ! -f "$G/done.$cand.$tag" ]; do sleep 5; done
  "${M1[@]}" compare --reference "$G/teacher/$tag" --candidate "$G/$cand/$tag" --out "$G/compare_$cand/$tag" \
    >"$G/compare_$cand.$tag.log" 2>&1
  say "compare $cand $tag: rc $?"
}

# Variants (environment): TEACHER_EVALS=0 skips the teacher's evals (their samples are seeded: an earlier
# run's rows stand); PLAIN_EVALS=0 skips the distilled hybrid's (with an on-policy stage and no chat stage they run
# beside that stage); CHAT_STEPS=N > 0 adds a chat stage after the 40M distillation: `m1 distill` on GSM8K training
# conversations (assistant tokens, chat template, the end-of-turn token included) for N steps of 64,
# then the same evals of that model ("staged_chat").
# CHAT_DATA=gsm8k (default) trains that stage on GSM8K's gold solutions; CHAT_DATA=teacher on the teacher's own
# answers to the same training prompts (CHAT_SAMPLES of them a prompt at T 0.7, sampled beside the distillation,
# kept where the teacher ended its turn: studies/teacher_responses.py). Runs before e3f12f0 under transformers
# 5.17 stopped hybrids at the wrong token, so none could end its turn (studies/results/gen_study_2026-12-07b/).
# ONPOLICY_STEPS=N > 0 adds an on-policy stage after those (`m1 distill --on-policy`: the hybrid writes its own replies
# to GSM8K training prompts, ONPOLICY_TOKENS of them at most, and learns the teacher's distribution on them, ONPOLICY_LOSS
# reverse_kl by default), N steps of 64 prompts (4 micro-batches of 16: one of 64 took 53 GB and, beside the evals,
# ran out of memory: results/gen_study_2026-12-08/), then the same evals of that model ("staged_onpolicy"): the remedy
# for replies that drift from the teacher's once the model reads its own tokens (the loops of results/gen_study_2026-12-07d/).
TEACHER_EVALS=${TEACHER_EVALS:-1}
ONPOLICY_STEPS=${ONPOLICY_STEPS:-0}
PLAIN_EVALS=${PLAIN_EVALS:-1}
CHAT_STEPS=${CHAT_STEPS:-0}
CHAT_DATA=${CHAT_DATA:-gsm8k}
say "start (evals ${EVAL_SET:-all}: ${#EVALS[@]}, teacher evals $TEACHER_EVALS, plain evals $PLAIN_EVALS, chat steps $CHAT_STEPS, chat data $CHAT_DATA, on-policy steps $ONPOLICY_STEPS)"
chat_data=(--data "$W/gsm8k_train.jsonl" --data-format gsm8k)
if [ "$CHAT_STEPS" -gt 0 ] && [ "$CHAT_DATA" = teacher ]; then
  chat_data=(--data "$W/chat_teacher.jsonl" --data-format m1-messages)
  # shellcheck disable=SC2086
  ( "${M1[@]}" eval --model "$W/smollm2.gguf" --benchmark "$W/gsm8k_train.jsonl" --n "${CHAT_SAMPLES:-2}" --temperature 0.7 \
      --max-tokens 512 --max-batch-size 512 --memory-budget-gb 16 --out "$G/teacher_train" ${EVAL_EXTRA:-} >"$G/teacher_train.log" 2>&1
    python3 studies/teacher_responses.py "$G/teacher_train" "$W/gsm8k_train.jsonl" "$W/chat_teacher.jsonl" >>"$G/teacher_train.log" 2>&1
    say "teacher answers for the chat stage: rc $? ($(tail -n 1 "$G/teacher_train.log"))" ) &
  chat_prep=$!
fi
if [ "$TEACHER_EVALS" = 1 ]; then
  evals teacher "$W/smollm2.gguf" --memory-budget-gb 16 &
  teacher=$!
fi
python3 studies/distill_cli.py --recipe staged --teacher "$W/smollm2.gguf" --data "$W/train_text.jsonl.gz" \
  --math500 "$W/math500.jsonl" --work "$W" --budget 3000 --eval-reserve 60 ${DISTILL_EXTRA:-} >"$G/distill.log" 2>&1
say "distill: rc $? ($(grep -c RECORD "$G/distill.log") records)"
touch "$G/done.distill"
cands=()
if [ -f "$W/staged/run/final/config.json" ]; then
  if [ "$PLAIN_EVALS" = 1 ] && [ "$CHAT_STEPS" -eq 0 ] && [ "$ONPOLICY_STEPS" -gt 0 ]; then
    # the distilled model's evals beside the on-policy training: a 135M model leaves most of the GPU idle
    evals staged "$W/staged/run/final" --memory-budget-gb 24 &
    plain=$!
  elif [ "$PLAIN_EVALS" = 1 ]; then
    cands+=("staged:$W/staged/run/final")
  fi
  if [ "$CHAT_STEPS" -gt 0 ]; then
    [ -n "${chat_prep:-}" ] && wait "$chat_prep"
    "${M1[@]}" distill --teacher "$W/smollm2.gguf" --student "$W/staged/run/final" "${chat_data[@]}" --max-length 512 --per-device-batch-size 64 --max-steps "$CHAT_STEPS" --learning-rate 1e-4 \
      --warmup-steps 0.05 --adam-beta2 0.95 --weight-decay 0 --lr-scheduler cosine --loss forward_kl \
      --loss-chunk-size 4096 --save-steps 100 --logging-steps 10 --out "$W/staged/chat" --resume --report-to \
      $([ -n "$(command -v nvidia-smi)" ] && echo --bf16) ${CHAT_EXTRA:-} >"$G/chat.log" 2>&1
    say "chat stage: rc $?"
    [ -f "$W/staged/chat/final/config.json" ] && cands+=("staged_chat:$W/staged/chat/final")
  fi
  if [ "$ONPOLICY_STEPS" -gt 0 ]; then  # on the chat-stage model when there is one, else on the distilled one
    src=$W/staged/run/final
    [ -f "$W/staged/chat/final/config.json" ] && src=$W/staged/chat/final
    "${M1[@]}" distill --on-policy --stages kl --teacher "$W/smollm2.gguf" --student "$src" --data "$W/gsm8k_train.jsonl" \
      --data-format gsm8k --max-completion-length "${ONPOLICY_TOKENS:-256}" --per-device-batch-size 16 --gradient-accumulation-steps 4 --max-steps "$ONPOLICY_STEPS" \
      --learning-rate "${ONPOLICY_LR:-5e-5}" --warmup-steps 0.05 --lr-scheduler cosine --loss "${ONPOLICY_LOSS:-reverse_kl}" \
      --save-steps 50 --logging-steps 5 --log-completions --out "$W/staged/onpolicy" --resume --report-to \
      $([ -n "$(command -v nvidia-smi)" ] && echo --bf16) ${ONPOLICY_EXTRA:-} >"$G/onpolicy.log" 2>&1
    say "on-policy stage: rc $?"
    [ -f "$W/staged/onpolicy/final/config.json" ] && cands+=("staged_onpolicy:$W/staged/onpolicy/final")
  fi
else
  say "no final staged model: evals skipped"
fi
for c in "${cands[@]}"; do  # one candidate at a time: each has the GPU beside the teacher's evals at most
  evals "${c%%:*}" "${c#*:}" --memory-budget-gb 24
done
evaluated=()  # candidates evaluated beside the on-policy stage: compared below, not evaluated again
[ -n "${plain:-}" ] && wait "$plain" && evaluated=("staged:$W/staged/run/final")
if [ "$TEACHER_EVALS" = 1 ]; then
  for c in "${evaluated[@]}" "${cands[@]}"; do for e in "${EVALS[@]}"; do compare "${c%%:*}" "${e%% *}"; done; done
  wait "$teacher"
fi
say "end"
touch "$G/done.all"
