#!/usr/bin/env bash
# transformers at the version m1 is tested with (5.25; m1 needs >= 5.24) for the GPU machine, whose image
# carries 5.17: the SmolLM2 parity tests (tests/convert/test_smollm2.py) compare m1 with transformers'
# GraniteMoeHybrid, which 5.17 gets wrong. Downloaded here into .whl-parity/ (git-ignored), carried on a
# call of their own (about 22 MB, with what huggingface_hub 2.4 and kernels need beyond the image) and installed into a separate folder, so the study's processes keep the
# image's transformers:
#
#   bash studies/device_parity_wheels.sh                    # here, once (needs the package index)
#   run(command="bash studies/device_gen_study.sh parity", carry=[".whl", ".whl-parity"])   # there
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl-parity/" .git/info/exclude 2>/dev/null || echo "/.whl-parity/" >> .git/info/exclude
mkdir -p .whl-parity
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl-parity transformers==5.25.0 huggingface_hub==2.4.0 kernels==0.19.1 safetensors==0.8.0 \
  httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 tomlkit==0.15.3 click==8.5.1 hf-xet==1.8.0
ls -la .whl-parity
du -sh .whl-parity
