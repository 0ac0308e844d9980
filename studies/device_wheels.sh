#!/usr/bin/env bash
# The wheels the GPU machine's image lacks for m1's training stages (TRL and what it needs
# beyond the image), downloaded here into .whl/ (git-ignored) for `carry`.
#
# The image (python 3.12, torch 2.11, transformers 5.17, accelerate 1.15, pandas 3.0,
# pyarrow 25, huggingface_hub 1.33, tokenizers 0.23.2) has no trl, datasets, math-verify,
# latex2sympy2_extended, antlr4, dill, multiprocess, xxhash, gguf (the SmolLM2 teacher is a GGUF file)
# or fla-core and einops (studies/gpu_check.sh's fla-core tests). transformers stays the image's
# 5.17 (TRL needs >= 4.56.2; 5.25 would need huggingface_hub 2.4 and kernels as well): m1's
# Engine, not transformers' generate(), does every rollout and evaluation there.
#
#   bash studies/device_wheels.sh          # here, once (needs the package index)
#   run(command="bash studies/device_env.sh && ...", carry=[".whl"])   # there
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 \
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 gguf==0.19.0 \
  fla-core==0.6.0 einops==0.8.2
ls -la .whl
du -sh .whl
