#!/usr/bin/env bash
# On the GPU machine: issue 20's engine measurements at this tree, in calls of at most 10 minutes, each
# writing JSON under $OUT. No wheels needed (the image's torch, Triton and transformers).
#   bash studies/device_engine.sh sweep    # decode launch sweep; with .devcarry/prev_decode.py carried (an
#                                          # earlier src/m1/ops/triton/decode.py), the same sweep of that kernel (m1-3b)
#                                          # beside it; then the decode and sampling GPU tests   (~3 min)
#   bash studies/device_engine.sh profile  # step profiles: context 2,048 (m1-3b 560, llama 128) and 16,384
#                                          # (m1-3b 144, llama 32)                                (~2 min)
#   bash studies/device_engine.sh e2e      # m1 bench, integrated throughput at 4,096 and 16,384 (~2 min)
#   Several parts run in order in one call: bash studies/device_engine.sh sweep profile
# Set M1_COMMIT to the tree's commit. Every model gets 79 GB (an H100's), whichever card runs it.
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
S=${M1_COMMIT:-unknown}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
[ $# -gt 0 ] || set -- usage
for part in "$@"; do
case "$part" in
  sweep)
    timeout 200 python3 studies/decode_sweep.py --commit "$S" --out "$OUT/sweep" >"$OUT/sweep.log" 2>&1
    echo "sweep rc $?"; grep '^best' "$OUT/sweep.log"
    if [ -f .devcarry/prev_decode.py ]; then
      rm -rf /tmp/prev && mkdir -p /tmp/prev && cp -r src studies /tmp/prev/
      cp .devcarry/prev_decode.py /tmp/prev/src/m1/ops/triton/decode.py
      timeout 200 python3 /tmp/prev/studies/decode_sweep.py --shapes m1-3b --commit "prev (.devcarry/prev_decode.py)" \
        --out "$OUT/sweep_prev" >"$OUT/sweep_prev.log" 2>&1
      echo "sweep of the earlier kernel rc $?"; grep '^best' "$OUT/sweep_prev.log"
    fi
    timeout 180 python3 -m pytest -q -p no:cacheprovider tests/ops/test_decode_gpu.py tests/ops/test_sampling_gpu.py \
      >"$OUT/gpu_tests.log" 2>&1
    echo "gpu tests rc $?"; tail -n 3 "$OUT/gpu_tests.log" ;;
  profile)
    timeout 250 python3 studies/profile_step.py --models m1-3b:560 llama-3.2-3b:128 --nano-batches 1 --commit "$S" \
      --out "$OUT/prof_2048" >"$OUT/prof_2048.log" 2>&1
    echo "profile 2048 rc $?"; tail -n 4 "$OUT/prof_2048.log"
    timeout 250 python3 studies/profile_step.py --context 16384 --models m1-3b:144 llama-3.2-3b:32 --nano-batches 1 \
      --memory-gb 66 --commit "$S" --out "$OUT/prof_16384" >"$OUT/prof_16384.log" 2>&1
    echo "profile 16384 rc $?"; tail -n 4 "$OUT/prof_16384.log" ;;
  e2e)
    timeout 250 python3 -m m1 bench --models llama-3.2-3b m1-3b --batches 560 --llama-batches 128 --gens 4096 \
      --e2e-gen 0 --compare-batch 0 --memory-gb 79 --out "$OUT/e2e_4096" >"$OUT/e2e_4096.log" 2>&1
    echo "e2e 4096 rc $?"; tail -n 6 "$OUT/e2e_4096.log"
    timeout 300 python3 -m m1 bench --models llama-3.2-3b m1-3b --batches 128 136 144 152 --llama-batches 24 28 32 36 \
      --gens 16384 --e2e-gen 0 --compare-batch 0 --baseline --memory-gb 79 --out "$OUT/e2e_16384" >"$OUT/e2e_16384.log" 2>&1
    echo "e2e 16384 rc $?"; tail -n 6 "$OUT/e2e_16384.log" ;;
  *) echo "usage: device_engine.sh sweep|profile|e2e [more parts, run in order]"; exit 2 ;;
esac
done
