#!/usr/bin/env bash
# On the GPU machine: one call of the distillation study through `m1 convert` + `m1 distill`
# (studies/distill_cli.py). State lives in /tmp/m1cli, which survives between back-to-back calls.
#
# The teacher GGUF (98 MB) is more than one call carries beside the wheels, so it travels in two
# parts (`split -b 56000000 -d SmolLM2-135M-Instruct.Q4_1.gguf gguf.part.`) under the ignored
# .devcarry/ folder, with the data (studies/build_train_text.py's output; MATH500 and GSM8K test from
# ../shared/data/benchmarks; GSM8K train from ../shared/data/train, for gen_study.sh's chat stage):
#   call 1: carry [".whl", ".devcarry/a"]             bash studies/device_distill_cli.sh setup
#   call 2: carry [".devcarry/b", ".devcarry/data"]   M1_COMMIT=<sha> bash studies/device_distill_cli.sh staged 560
#   call 3…: no carry                                  M1_COMMIT=<sha> bash studies/device_distill_cli.sh staged 560
set -uo pipefail
. studies/device_env.sh || exit 1
W=/tmp/m1cli
mkdir -p "$W"
for d in .devcarry/a .devcarry/b .devcarry/data; do
  if [ -d "$d" ]; then cp "$d"/* "$W"/; fi
done
if [ ! -f "$W/smollm2.gguf" ] && [ -f "$W/gguf.part.00" ] && [ -f "$W/gguf.part.01" ]; then
  cat "$W"/gguf.part.0* > "$W/smollm2.gguf" && rm "$W"/gguf.part.0*
  echo "teacher joined: sha256 $(sha256sum "$W/smollm2.gguf" | cut -c1-16) (expected b179c9523d0e6a0f)"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
ls -la "$W"
[ "${1:-setup}" = setup ] && exit 0
[ -f "$W/smollm2.gguf" ] || { echo "the teacher is not complete on this machine (call 1 first)"; exit 1; }
recipe=$1; budget=$2; shift 2
python3 studies/distill_cli.py --recipe "$recipe" --teacher "$W/smollm2.gguf" --data "$W/train_text.jsonl.gz" \
  --math500 "$W/math500.jsonl" --work "$W" --out "$OUT" --budget "$budget" "$@"
