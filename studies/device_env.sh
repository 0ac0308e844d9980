#!/usr/bin/env bash
# On the GPU machine: install the carried wheels (studies/device_wheels.sh) into /tmp/site and
# put it and src/ on the path. Source it: `. studies/device_env.sh`.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device_env: wheel install failed"; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -c "import torch, transformers, trl, datasets, math_verify, gguf; print('device_env: torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__)"
