"""Sweep the fused Mamba-2 decode step's launch shape on one GPU (issue 20, done-means 3).

Why: the step measured 0.41 (m1-3b) and 0.50 (m1-3b-s128) of copy bandwidth at batch 256 on 2026-11-28
(`results/kernels_2026-11-28.json`), against a target of 0.7. In the H100 decode-step profile it takes 2.8 ms
of m1-3b's 21 ms step at batch 560 (`results/profile_step_2026-12-07/`). The launch shape was picked by a
rule of thumb: about 4K state elements a program, and 4 or 8 warps.

For each shape and batch this times every (groups per program, warps) pair as `kernel_bench.py` times
the default: a CUDA graph of 8 steps over disjoint slot sets, so the state does not sit in L2. It checks
each pair's output and new states against the default launch's (y within 2e-4 relative: the warps may change
y = C·h's summation order by a bf16 step; the conv state exact). Ratios are against the copy bandwidth measured
in the same run.

    python3 studies/decode_sweep.py --commit $(git rev-parse --short HEAD) --out DIR   # about a minute
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "studies"))
from kernel_bench import SHAPES, bench, copy_bandwidth, layer_params  # noqa: E402

from m1.ops.triton.decode import launch_shape, mamba2_decode_step_triton  # noqa: E402


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def step_bytes(H: int, P: int, G: int, N: int, batch: int, width: int = 4, elem: int = 2) -> int:
    """Bytes one decode step must move for `batch` rows: the fp32 SSM state read and written, the conv state
    (width - 1 taps of every xBC channel) read and written, the zxbcdt row read and the output written. The
    layer's parameters are read once for all rows and are not counted. `of_copy` counts the state alone, as
    the records since 2026-11-28 have; `of_copy_all_bytes` counts these (for m1-3b the state is 74% of them, for
    s128 96%)."""
    inner, conv_dim = H * P, H * P + 2 * G * N
    per_row = 2 * H * P * N * 4 + 2 * conv_dim * (width - 1) * elem + (inner + conv_dim + H) * elem + inner * elem
    return batch * per_row


def sweep_one(shape: str, batch: int, copy_gbs: float, sets: int = 8) -> list[dict]:
    H, P, G, N = SHAPES[shape]
    slots = batch * sets
    params, kw, cs0, ss0, zx = layer_params(H, P, G, N, torch.bfloat16, slots, seed=3)
    perm = torch.randperm(slots, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    ids = [perm[i * batch : (i + 1) * batch].contiguous() for i in range(sets)]
    zs = [zx(batch) for _ in range(sets)]
    state_bytes = 2 * batch * H * P * N * 4
    all_bytes = step_bytes(H, P, G, N, batch)

    def run(cs, ss, **launch):
        return [mamba2_decode_step_triton(zs[i], cs, ss, ids[i], *params, **kw, **launch) for i in range(sets)]

    default_kg, default_warps = launch_shape(G, H // G, P, N)
    cs_ref, ss_ref = cs0.clone(), ss0.clone()
    want = run(cs_ref, ss_ref)
    rows = []
    kgs = [k for k in (1, 2, 4, 8, 16, 32, 64) if G % k == 0]
    for kg in kgs:
        for warps in (2, 4, 8):
            launch = dict(groups_per_program=kg, num_warps=warps)
            cs, ss = cs0.clone(), ss0.clone()
            got = run(cs, ss, **launch)
            diff = max([rel(a, b) for a, b in zip(got, want)] + [rel(ss, ss_ref)])
            same = diff <= 2e-4 and torch.equal(cs, cs_ref)  # y = C·h's order may follow the warps: a bf16 step
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                run(cs, ss, **launch)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run(cs, ss, **launch)
            ms = bench(graph.replay) / sets
            gbs = state_bytes / (ms * 1e-3) / 1e9
            rows.append(dict(shape=shape, batch=batch, groups_per_program=kg, num_warps=warps, default=False,
                             ms=ms, state_GBps=gbs, of_copy=gbs / copy_gbs,
                             of_copy_all_bytes=all_bytes / (ms * 1e-3) / 1e9 / copy_gbs, same_as_default=same, max_rel_diff=diff))
            print(json.dumps(rows[-1]), flush=True)
            del graph
    # the default launch, timed the same way
    s = torch.cuda.Stream()
    cs, ss = cs0.clone(), ss0.clone()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        run(cs, ss)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run(cs, ss)
    ms = bench(graph.replay) / sets
    gbs = state_bytes / (ms * 1e-3) / 1e9
    rows.append(dict(shape=shape, batch=batch, groups_per_program=default_kg, num_warps=default_warps, default=True, ms=ms,
                     state_GBps=gbs, of_copy=gbs / copy_gbs, of_copy_all_bytes=all_bytes / (ms * 1e-3) / 1e9 / copy_gbs,
                     same_as_default=True))
    print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 560])
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    copy_gbs = copy_bandwidth()
    rows = []
    for shape in args.shapes:
        for batch in args.batches:
            rows += sweep_one(shape, batch, copy_gbs)
    best = {}
    for r in rows:
        key = f"{r['shape']} b{r['batch']}"
        if r["same_as_default"] and (key not in best or r["ms"] < best[key]["ms"]):
            best[key] = r
    out = dict(device=torch.cuda.get_device_name(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               commit=args.commit, torch=torch.__version__, copy_GBps=copy_gbs, rows=rows, best=best)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decode_sweep.json").write_text(json.dumps(out, indent=1))
    for k, r in best.items():
        print(f"best {k}: groups/program {r['groups_per_program']}, warps {r['num_warps']}: {r['ms']:.4f} ms, "
              f"{r['of_copy']:.2f} of copy bandwidth ({r['of_copy_all_bytes']:.2f} counting every byte the step moves)")


if __name__ == "__main__":
    main()
