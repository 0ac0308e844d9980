"""Check and time the Mamba-2 kernels on one GPU; write studies/results/kernels_<date>.json.

    python studies/kernel_bench.py [--out DIR] [--no-tests]

One run does everything the issue asks, side by side:
  1. the GPU tests (`python -m pytest tests/ops -q -n 8`, alongside step 2), result recorded;
  2. accuracy against the float64 reference on fresh random inputs, for both M1-3B SSD
     shapes (192 heads x 16, 192 groups, state 16; 24 x 128, 24 groups, state 128), fp32
     and bf16: the output, the final state and every gradient (dx, ddt, dA, dB, dC, dD, dh0);
     the fused decode step against the reference step; 64 decode steps after a chunked
     prefill against the full-sequence forward;
  3. timing at B=4, T=8192 (medians of triton.testing.do_bench after warm-up): our SSD
     forward and forward+backward, fla-core's forward (and its backward, which is
     recorded as refused where Triton < 3.7.1 on Hopper), against causal GQA
     scaled_dot_product_attention (24 query / 8 kv heads, head dim 128);
  4. the decode step at batch 256, replayed from a CUDA graph over 8 disjoint slot sets
     (so the state does not sit in L2), as a fraction of the device-to-device copy
     bandwidth measured in the same run, counting the SSM state's read and write.

Order of work: timings 3-4 first (quiet GPU), then 1 and 2 together, fla-core's timing last
(it autotunes on first use). The JSON is rewritten after every record, so a run cut off by
a time limit keeps what it measured. A full run takes several minutes on an H200, most of
it Triton compilation and fla-core autotuning: give it a 580 s limit.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from m1.ops import dispatch  # noqa: E402
from m1.ops.decode import mamba2_decode_step, mamba2_decode_step_ref, mamba2_sequence_ref  # noqa: E402
from m1.ops.ssd import ssd_chunked, ssd_chunked_ref  # noqa: E402

SHAPES = {"m1-3b": (192, 16, 192, 16), "m1-3b-s128": (24, 128, 24, 128)}  # heads, head_dim, groups, state
TOL = {"fp32": 5e-3, "bf16": 2e-2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
RECORDS: list[dict] = []


STATE: dict = {}  # env and output path, so every record rewrites the JSON (a cut-off run keeps what it measured)


def record(kind, name, value, unit, **meta):
    r = dict(kind=kind, name=name, value=value, unit=unit, **meta)
    RECORDS.append(r)
    print(json.dumps(r), flush=True)
    if STATE.get("path"):
        bad = [x for x in RECORDS if x.get("ok") is False]
        STATE["path"].write_text(json.dumps(dict(env=STATE["env"], records=RECORDS, failed=bad), indent=1) + "\n")
    return r


def version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


# ----------------------------------------------------------------------------- accuracy


def ssd_inputs(b, l, H, P, G, N, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, device="cuda", dtype=torch.float64)  # noqa: E731
    return dict(
        x=r(b, l, H, P), dt=F.softplus(r(b, l, H) - 1.0), A=-torch.exp(r(H) * 0.5),
        B=r(b, l, G, N), C=r(b, l, G, N), D=r(H), initial_state=r(b, H, P, N),
    )


def check_ssd(shape_name, dtype_name, b=2, l=1000, seed=0):
    H, P, G, N = SHAPES[shape_name]
    dtype = DTYPES[dtype_name]
    t64 = ssd_inputs(b, l, H, P, G, N, seed)
    ref = {k: v.clone().requires_grad_(True) for k, v in t64.items()}
    y, f = ssd_chunked_ref(**ref)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    wy = torch.randn(y.shape, generator=gen, device="cuda", dtype=torch.float64)
    wf = torch.randn(f.shape, generator=gen, device="cuda", dtype=torch.float64)
    ((y * wy).sum() + (f * wf).sum()).backward()
    ours = {k: (v.to(dtype) if k in ("x", "B", "C") else v.float()).detach().requires_grad_(True) for k, v in t64.items()}
    y2, f2 = ssd_chunked(**ours)
    ((y2.double() * wy).sum() + (f2.double() * wf).sum()).backward()
    names = dict(x="dx", dt="ddt", A="dA", B="dB", C="dC", D="dD", initial_state="dh0")
    errs = {"y": rel(y2, y), "final_state": rel(f2, f)}
    errs.update({names[k]: rel(ours[k].grad, ref[k].grad) for k in t64})
    for k, v in errs.items():
        record("accuracy", f"ssd_chunked.{k}", v, "rel_err", shape=shape_name, dtype=dtype_name, b=b, l=l,
               tol=TOL[dtype_name], ok=bool(v <= TOL[dtype_name]), impl="triton(own fwd+bwd)")
    # the gradient-free path (fla-core's forward where installed)
    with torch.no_grad():
        y3, f3 = ssd_chunked(**{k: v.detach() for k, v in ours.items()})
    from m1.ops.triton.ssd import fla_available

    impl = "fla chunk_simple_gla fwd" if fla_available() else "triton(own fwd)"
    for k, v in {"y": rel(y3, y), "final_state": rel(f3, f)}.items():
        record("accuracy", f"ssd_chunked_nograd.{k}", v, "rel_err", shape=shape_name, dtype=dtype_name, b=b, l=l,
               tol=TOL[dtype_name], ok=bool(v <= TOL[dtype_name]), impl=impl)


def layer_params(H, P, G, N, dtype, slots, W=4, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s, dt=torch.float32: torch.randn(*s, generator=gen, device="cuda", dtype=dt)  # noqa: E731
    inner, conv_dim = H * P, H * P + 2 * G * N
    params = (r(conv_dim, W, dt=dtype) * 0.5, r(conv_dim, dt=dtype) * 0.1, r(H) - 1.0, -torch.exp(r(H) * 0.5), r(H),
              1.0 + 0.1 * r(inner, dt=dtype))
    kw = dict(n_heads=H, head_dim=P, n_groups=G, state_size=N, eps=1e-5, dt_limit=(0.0, math.inf))
    return params, kw, r(slots, conv_dim, W - 1, dt=dtype), r(slots, H, P, N), lambda *s: r(*s, inner + conv_dim + H, dt=dtype)


def check_decode_step(shape_name, dtype_name, batch=256):
    H, P, G, N = SHAPES[shape_name]
    dtype = DTYPES[dtype_name]
    slots = 2 * batch
    params, kw, cs, ss, zx = layer_params(H, P, G, N, dtype, slots, seed=7)
    ids = torch.randperm(slots, device="cuda")[:batch]
    z = zx(batch)
    cs1, ss1, cs2, ss2 = cs.clone(), ss.clone(), cs.clone(), ss.clone()
    y1 = mamba2_decode_step_ref(z, cs1, ss1, ids, *params, **kw)
    y2 = mamba2_decode_step(z, cs2, ss2, ids, *params, **kw)
    others = torch.ones(slots, dtype=torch.bool, device="cuda")
    others[ids] = False
    untouched = bool(torch.equal(ss2[others], ss[others]) and torch.equal(cs2[others], cs[others]))
    for k, v in {"y": rel(y2, y1), "ssm_state": rel(ss2, ss1), "conv_state": rel(cs2, cs1)}.items():
        record("accuracy", f"decode_step.{k}", v, "rel_err", shape=shape_name, dtype=dtype_name, batch=batch,
               tol=TOL[dtype_name], ok=bool(v <= TOL[dtype_name]), vs="mamba2_decode_step_ref", other_slots_untouched=untouched)


def check_decode_after_prefill(shape_name, b=2, T=512, K=64):
    """Chunked prefill (Triton) of T tokens, then K fused steps, against the float64 full path."""
    H, P, G, N = SHAPES[shape_name]
    params, kw, cs, ss, zx = layer_params(H, P, G, N, torch.float32, 8, seed=11)
    seq = zx(b, T + K)
    y_all, _, _ = mamba2_sequence_ref(seq, *params, **kw, dtype=torch.float64)
    with torch.no_grad():
        _, conv_fin, ssm_fin = mamba2_sequence_ref(seq[:, :T], *params, **kw, ssd=ssd_chunked, dtype=torch.float32)
    ids = torch.tensor([5, 2], device="cuda")
    cs[ids], ss[ids] = conv_fin, ssm_fin
    ys = [mamba2_decode_step(seq[:, i].contiguous(), cs, ss, ids, *params, **kw) for i in range(T, T + K)]
    v = rel(torch.stack(ys, 1), y_all[:, T:])
    record("accuracy", "decode_after_prefill.y", v, "rel_err", shape=shape_name, dtype="fp32", b=b, prefill=T, steps=K,
           tol=TOL["fp32"], ok=bool(v <= TOL["fp32"]), vs="float64 full-sequence forward")


# ----------------------------------------------------------------------------- timing


def bench(fn, warmup=100, rep=400):
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def copy_bandwidth():
    n = 1 << 30  # 1 GiB each way, far past L2
    src = torch.randn(n // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    gbs = 2 * n / (ms * 1e-3) / 1e9
    record("timing", "copy_d2d", ms, "ms", bytes=2 * n, bandwidth_GBps=gbs)
    return gbs


def time_sdpa(B=4, T=8192, hq=24, hkv=8, d=128):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, hq, T, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
    k = torch.randn(B, hkv, T, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
    v = torch.randn(B, hkv, T, d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
    do = torch.randn_like(q)
    sdpa = F.scaled_dot_product_attention

    def fwd():
        with torch.no_grad():
            sdpa(q, k, v, is_causal=True, enable_gqa=True)

    def fwdbwd():
        o = sdpa(q, k, v, is_causal=True, enable_gqa=True)
        torch.autograd.grad(o, (q, k, v), do)

    meta = dict(B=B, T=T, q_heads=hq, kv_heads=hkv, head_dim=d, dtype="bf16", causal=True)
    f = record("timing", "sdpa.fwd", bench(fwd), "ms", **meta)["value"]
    fb = record("timing", "sdpa.fwd+bwd", bench(fwdbwd), "ms", **meta)["value"]
    return f, fb


def time_ssd_own(shape_name, attn, B=4, T=8192):
    from m1.ops.triton.ssd import ssd_chunked_own

    H, P, G, N = SHAPES[shape_name]
    gen = torch.Generator(device="cuda").manual_seed(1)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    x, Bm, Cm = r(B, T, H, P).bfloat16(), r(B, T, G, N).bfloat16(), r(B, T, G, N).bfloat16()
    dt, A, D = F.softplus(r(B, T, H) - 1.0), -torch.exp(r(H) * 0.5), r(H)
    ins = [t.requires_grad_(True) for t in (x, dt, A, Bm, Cm, D)]
    dy = r(B, T, H, P).bfloat16()
    meta = dict(shape=shape_name, B=B, T=T, heads=H, head_dim=P, groups=G, state=N, dtype="bf16", chunk=64)

    def own_fwd():
        with torch.no_grad():
            ssd_chunked_own(*ins)

    def own_fwdbwd():
        y, _ = ssd_chunked_own(*ins)
        torch.autograd.grad(y, ins, dy)

    f = record("timing", "ssd.own.fwd", bench(own_fwd), "ms", **meta)["value"]
    fb = record("timing", "ssd.own.fwd+bwd", bench(own_fwdbwd), "ms", **meta)["value"]
    record("ratio", "ssd.own.fwd / sdpa.fwd", f / attn[0], "x", **meta)
    record("ratio", "ssd.own.fwd+bwd / sdpa.fwd+bwd", fb / attn[1], "x", target=0.5, ok=bool(fb / attn[1] <= 0.5), **meta)
    OWN_FWD[shape_name] = f


OWN_FWD: dict = {}


def time_ssd_fla(shape_name, attn, B=4, T=8192):
    from m1.ops.triton.ssd import fla_available, ssd_chunked_fla_fwd

    H, P, G, N = SHAPES[shape_name]
    gen = torch.Generator(device="cuda").manual_seed(1)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    x, Bm, Cm = r(B, T, H, P).bfloat16(), r(B, T, G, N).bfloat16(), r(B, T, G, N).bfloat16()
    dt, A, D = F.softplus(r(B, T, H) - 1.0), -torch.exp(r(H) * 0.5), r(H)
    ins = (x, dt, A, Bm, Cm, D)
    meta = dict(shape=shape_name, B=B, T=T, heads=H, head_dim=P, groups=G, state=N, dtype="bf16", chunk=64)
    if not fla_available():
        record("note", "fla", None, "", reason="fla-core not installed", **meta)
        return
    from fla.ops.simple_gla import chunk_simple_gla

    def fla_wrapped():
        with torch.no_grad():
            ssd_chunked_fla_fwd(*ins)

    q, k = (Cm if G == H else Cm.repeat_interleave(H // G, 2)), (Bm if G == H else Bm.repeat_interleave(H // G, 2))
    v = (x.float() * dt.float()[..., None]).bfloat16()
    g = (dt.float() * A.float()[None, None]).detach()

    def fla_raw():
        with torch.no_grad():
            chunk_simple_gla(q, k, v, g=g, scale=1.0, output_final_state=True, state_v_first=True)

    ff = record("timing", "ssd.fla_wrapped.fwd", bench(fla_wrapped), "ms", note="includes x*dt, D skip", **meta)["value"]
    fr = record("timing", "ssd.fla_raw.fwd", bench(fla_raw), "ms", note="chunk_simple_gla alone", **meta)["value"]
    if shape_name in OWN_FWD:
        record("ratio", "ssd.own.fwd / ssd.fla_raw.fwd", OWN_FWD[shape_name] / fr, "x", **meta)
        record("ratio", "ssd.own.fwd / ssd.fla_wrapped.fwd", OWN_FWD[shape_name] / ff, "x", **meta)
    record("ratio", "ssd.fla_wrapped.fwd / sdpa.fwd", ff / attn[0], "x", **meta)
    record("note", "ssd.fla_raw.fwd+bwd", None, "", not_run="fla-core 0.6's gated chunk backward refuses Triton < 3.7.1 "
           "on Hopper (fla/ops/common/chunk_o.py); this image has Triton " + __import__("triton").__version__, **meta)


def time_decode(shape_name, batch=256, sets=8, copy_gbs=None):
    H, P, G, N = SHAPES[shape_name]
    slots = batch * sets
    params, kw, cs, ss, zx = layer_params(H, P, G, N, torch.bfloat16, slots, seed=3)
    perm = torch.randperm(slots, device="cuda")
    ids = [perm[i * batch : (i + 1) * batch].contiguous() for i in range(sets)]
    zs = [zx(batch) for _ in range(sets)]
    meta = dict(shape=shape_name, batch=batch, dtype="bf16", slot_sets=sets)

    def steps(fn):
        for i in range(sets):
            fn(zs[i], cs, ss, ids[i], *params, **kw)

    steps(mamba2_decode_step)  # compile
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        steps(mamba2_decode_step)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        steps(mamba2_decode_step)
    ms = bench(graph.replay) / sets
    inner, conv_dim = H * P, H * P + 2 * G * N
    state_bytes = 2 * batch * H * P * N * 4
    all_bytes = state_bytes + batch * (2 * conv_dim * 3 + inner + conv_dim + H + inner) * 2
    gbs = state_bytes / (ms * 1e-3) / 1e9
    record("timing", "decode_step.fused_graph", ms, "ms", state_bytes=state_bytes, state_GBps=gbs,
           all_bytes=all_bytes, all_GBps=all_bytes / (ms * 1e-3) / 1e9, **meta)
    if copy_gbs:
        record("ratio", "decode_step.state_bandwidth / copy_bandwidth", gbs / copy_gbs, "x", target=0.7,
               ok=bool(gbs / copy_gbs >= 0.7), **meta)
    ms_ref = bench(lambda: steps(mamba2_decode_step_ref), warmup=20, rep=100) / sets
    record("timing", "decode_step.reference_eager", ms_ref, "ms", **meta)


# ----------------------------------------------------------------------------- main


def start_tests():
    """The GPU test suite, in a subprocess (xdist workers) while the accuracy checks run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "tests/ops", "-q", "-p", "no:cacheprovider", "-n", "8"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish_tests(p, timeout_s):
    try:
        out, _ = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        out += f"\ntests killed after the bench's {timeout_s:.0f} s allowance"
    tail = out.strip().splitlines()
    print("\n".join(tail[-40:]), flush=True)
    record("tests", "pytest tests/ops -q -n 8", p.returncode, "exit_code", summary=tail[-1] if tail else "",
           failures=[line for line in tail if line.startswith(("FAILED", "ERROR"))])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--tests-timeout", type=float, default=600.0, help="seconds (from the start) the GPU tests may take")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    assert torch.cuda.is_available(), "studies/kernel_bench.py needs a CUDA GPU"
    torch.backends.cuda.matmul.allow_tf32 = False
    import triton

    env = dict(
        device=torch.cuda.get_device_name(), date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__, triton=triton.__version__, fla_core=version("fla-core"), cuda=torch.version.cuda,
        python=sys.version.split()[0],
    )
    print(json.dumps(env), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"kernels_{env['date'][:10]}.json"
    STATE.update(env=env, path=path)
    # timing first, on a quiet GPU, so a cut-off run still has the numbers that need one
    copy_gbs = copy_bandwidth()
    attn = time_sdpa()
    for shape in SHAPES:
        time_ssd_own(shape, attn)
        time_decode(shape, copy_gbs=copy_gbs)
    record("dispatch", "ssd_chunked", dispatch.chosen_name("ssd_chunked", torch.zeros(1, device="cuda")), "impl")
    record("dispatch", "mamba2_decode_step", dispatch.chosen_name("mamba2_decode_step", torch.zeros(1, device="cuda")), "impl")
    # then the GPU tests (xdist subprocess) alongside the accuracy checks
    t_start = time.monotonic()
    tests = None if args.no_tests else start_tests()
    for shape in SHAPES:
        for dt in DTYPES:
            check_ssd(shape, dt)
            check_decode_step(shape, dt)
        check_decode_after_prefill(shape)
    if tests is not None:
        finish_tests(tests, max(5.0, args.tests_timeout - (time.monotonic() - t_start)))
    for shape in SHAPES:  # last: fla autotunes on first use
        time_ssd_fla(shape, attn)
    print(f"wrote {path}")
    print("\nsummary")
    for r in RECORDS:
        if r["kind"] in ("ratio", "tests") or (r["kind"] == "timing"):
            extra = r.get("shape", "")
            print(f"  {r['kind']:8s} {r['name']:50s} {extra:11s} {r['value'] if r['value'] is None else round(r['value'], 4)} {r['unit']}")
    acc = [r for r in RECORDS if r["kind"] == "accuracy"]
    print(f"  accuracy: {sum(r['ok'] for r in acc)}/{len(acc)} within tolerance; worst: " +
          ", ".join(f"{r['name']}[{r['shape']},{r['dtype']}]={r['value']:.2e}" for r in sorted(acc, key=lambda r: -r['value'] / r['tol'])[:4]))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], path.name).write_text(path.read_text())


if __name__ == "__main__":
    main()
