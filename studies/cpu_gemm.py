"""fp32 GEMMs of the SmolLM2 Engine step on this CPU: what `F.linear` gets (the BLAS torch was built with, MKL on x86)
against oneDNN on a oneDNN copy of the weight (`torch.utils.mkldnn`), issue 20's CPU target (done-means 5).

Why: a batch-64 decode step of SmolLM2 on 2 cores is about 80% `aten::mm` (studies/results/cpu_engine_2026-12-06),
and `transformers.generate` runs the same GEMMs, so the Engine can only be 2x faster where its GEMMs are. MKL is
known to take slower code paths on AMD CPUs; oneDNN (which torch also ships) dispatches on the CPU's instruction
set. This times, for each weight shape of the model, `F.linear` (as the Engine and generate run it today) and an
`MkldnnLinear` on the same fp32 weights, the input converted to oneDNN's layout and back inside the timing (what a
drop-in path would pay), at the rows of a b16 and b64 decode step and of a prefill chunk. Also the largest |diff|
between the two (same fp32 maths, summed in another order).

    python studies/cpu_gemm.py --out studies/results/cpu_gemm_<cpu>_<date>.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import mkldnn

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: cpu_engine.py's helpers
from cpu_engine import machine  # noqa: E402

# SmolLM2-135M: hidden 576, MLP 1536, 9 query + 3 KV heads of 64, vocab 49152 (tied LM head)
SHAPES = {"qkv": (576, 576 + 2 * 192), "o_proj": (576, 576), "mlp_up": (576, 2 * 1536), "mlp_down": (1536, 576),
          "lm_head": (576, 49152)}
ROWS = {"decode_b16": 16, "decode_b64": 64, "prefill_chunk": 256}


def bench(fn, seconds: float = 0.5) -> float:
    for _ in range(5):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    isa = torch.backends.cpu.get_cpu_capability()
    rec = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "cpu_capability": isa,
           "threads": a.threads, "torch": torch.__version__, "blas": "mkl" if torch.backends.mkl.is_available() else "other",
           "mkldnn": torch.backends.mkldnn.is_available(), "records": []}
    totals = {r: [0.0, 0.0] for r in ROWS}
    for name, (k, n) in SHAPES.items():
        w = torch.randn(n, k) / k**0.5
        lin = torch.nn.Linear(k, n, bias=False)
        lin.weight.data.copy_(w)
        packed = mkldnn.to_mkldnn(lin)  # a copy of the weight as a oneDNN tensor, made once (as a cache would)
        for rows_name, m in ROWS.items():
            x = torch.randn(m, k)
            t_blas = bench(lambda: F.linear(x, w))
            t_dnn = bench(lambda: packed(x.to_mkldnn()).to_dense())
            diff = (F.linear(x, w) - packed(x.to_mkldnn()).to_dense()).abs().max().item()
            gflop = 2 * m * k * n / 1e9
            r = {"weight": name, "k": k, "n": n, "rows": m, "case": rows_name, "linear_ms": t_blas * 1e3, "onednn_ms": t_dnn * 1e3,
                 "linear_gflops": gflop / t_blas, "onednn_gflops": gflop / t_dnn, "speedup": t_blas / t_dnn, "max_abs_diff": diff}
            rec["records"].append(r)
            per_model = 1 if name == "lm_head" else 30  # each of the 30 layers has one of each other weight
            totals[rows_name][0] += per_model * t_blas
            totals[rows_name][1] += per_model * t_dnn
            print(f"{name:<9} {m:>4} x {k} x {n:<6} linear {t_blas * 1e3:7.3f} ms ({gflop / t_blas:5.0f} GF/s)  "
                  f"oneDNN {t_dnn * 1e3:7.3f} ms ({gflop / t_dnn:5.0f} GF/s)  x{t_blas / t_dnn:.2f}  |diff| {diff:.1e}", flush=True)
    rec["per_step"] = {r: {"linear_ms": v[0] * 1e3, "onednn_ms": v[1] * 1e3, "speedup": v[0] / v[1]} for r, v in totals.items()}
    for r, v in rec["per_step"].items():
        print(f"all-attention SmolLM2, every GEMM of one {r} step: linear {v['linear_ms']:.1f} ms, oneDNN {v['onednn_ms']:.1f} ms, "
              f"x{v['speedup']:.2f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
