#!/usr/bin/env bash
# On the GPU machine: issue 20's engine measurements at this tree, each part writing JSON and a log under $OUT.
# No wheels needed (the image's torch, Triton and transformers). Parts run in the order given, in one call:
#   sweep     decode launch sweep (studies/decode_sweep.py); with .devcarry/prev_decode.py carried (an earlier
#             src/m1/ops/triton/decode.py), the same sweep of that kernel on m1-3b beside it      (~2 min)
#   tests     tests/ops/test_decode_gpu.py and tests/ops/test_sampling_gpu.py                    (~1 min)
#   prof2048  step profile at context 2,048: m1-3b batch 560, llama-3.2-3b batch 128             (~1 min)
#   prof16k   step profile at context 16,384: m1-3b batch 144, llama-3.2-3b batch 32            (~1 min)
#   e2e4096   m1 bench, integrated throughput at 256 + 4,096, batches 560 and 128                (~1 min)
#   e2e16k    m1 bench at 256 + 16,384, batches 128-152 and 24-36                                (~2 min)
#   profile = prof2048 prof16k; e2e = e2e4096 e2e16k
#     M1_COMMIT=<sha> bash studies/device_engine.sh sweep tests prof2048 e2e4096
# Every model gets 79 GB (an H100's), whichever card runs it. The result folders come back as $OUT/results.tgz.
set -uo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 M1_COMMIT=${M1_COMMIT:-unknown}
S=${M1_COMMIT:-unknown}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
[ $# -gt 0 ] || set -- usage
parts=()
for p in "$@"; do
  case "$p" in profile) parts+=(prof2048 prof16k) ;; e2e) parts+=(e2e4096 e2e16k) ;; *) parts+=("$p") ;; esac
done
for part in "${parts[@]}"; do
case "$part" in
  sweep)
    timeout 200 python3 studies/decode_sweep.py --commit "$S" --out "$OUT/sweep" >"$OUT/sweep.log" 2>&1
    echo "sweep rc $?"; grep '^best' "$OUT/sweep.log"
    if [ -f .devcarry/prev_decode.py ]; then
      rm -rf /tmp/prev && mkdir -p /tmp/prev && cp -r src studies /tmp/prev/
      cp .devcarry/prev_decode.py /tmp/prev/src/m1/ops/triton/decode.py
      timeout 150 python3 /tmp/prev/studies/decode_sweep.py --shapes m1-3b --commit "prev (.devcarry/prev_decode.py)" \
        --out "$OUT/sweep_prev" >"$OUT/sweep_prev.log" 2>&1
      echo "sweep of the earlier kernel rc $?"; grep '^best' "$OUT/sweep_prev.log"
    fi ;;
  tests)
    timeout 180 python3 -m pytest -q -p no:cacheprovider tests/ops/test_decode_gpu.py tests/ops/test_sampling_gpu.py \
      >"$OUT/gpu_tests.log" 2>&1
    echo "gpu tests rc $?"; tail -n 3 "$OUT/gpu_tests.log" ;;
  prof2048)
    timeout 200 python3 studies/profile_step.py --models m1-3b:560 llama-3.2-3b:128 --nano-batches 1 --commit "$S" \
      --out "$OUT/prof_2048" >"$OUT/prof_2048.log" 2>&1
    echo "profile 2048 rc $?"; tail -n 4 "$OUT/prof_2048.log" ;;
  prof16k)
    timeout 200 python3 studies/profile_step.py --context 16384 --models m1-3b:144 llama-3.2-3b:32 --nano-batches 1 \
      --memory-gb 66 --commit "$S" --out "$OUT/prof_16384" >"$OUT/prof_16384.log" 2>&1
    echo "profile 16384 rc $?"; tail -n 4 "$OUT/prof_16384.log" ;;
  e2e4096)
    timeout 200 python3 -m m1 bench --models llama-3.2-3b m1-3b --batches 560 --llama-batches 128 --gens 4096 \
      --e2e-gen 0 --compare-batch 0 --baseline --memory-gb 79 --out "$OUT/e2e_4096" >"$OUT/e2e_4096.log" 2>&1
    echo "e2e 4096 rc $?"; tail -n 6 "$OUT/e2e_4096.log" ;;
  e2e16k)
    timeout 300 python3 -m m1 bench --models llama-3.2-3b m1-3b --batches 128 136 144 152 --llama-batches 24 28 32 36 \
      --gens 16384 --e2e-gen 0 --compare-batch 0 --baseline --memory-gb 79 --out "$OUT/e2e_16384" >"$OUT/e2e_16384.log" 2>&1
    echo "e2e 16384 rc $?"; tail -n 6 "$OUT/e2e_16384.log" ;;
  *) echo "usage: device_engine.sh PART... (sweep tests prof2048 prof16k e2e4096 e2e16k; profile; e2e)"; exit 2 ;;
esac
done
# a call brings back at most 8 files: the result folders travel as one archive, the logs beside it
dirs=$(cd "$OUT" && find . -mindepth 1 -maxdepth 1 -type d -printf '%P\n')
if [ -n "$dirs" ]; then
  # shellcheck disable=SC2086
  (cd "$OUT" && tar czf results.tgz $dirs && rm -rf $dirs)
fi
