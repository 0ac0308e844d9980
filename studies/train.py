"""H200 distillation-step benchmark: student m1-3b, teacher llama-3.2-3b, bf16, seq 8192.

One training step is exactly what `m1 distill` runs per micro-batch: the frozen teacher's
forward (bf16 weights), the student's forward with gradient checkpointing under bf16
autocast (fp32 master weights), the chunked reverse KL over all 8192 positions inside the
student's forward (`m1.modeling.HybridForCausalLM` + `m1.train.losses`), backward, and
a fused AdamW step. Random weights; ops run on whatever `m1.ops` dispatch picks on the GPU
(the chosen implementations are recorded).

Reported:
- tokens/s over timed steps after warm-up;
- MFU = FLOPs/token x tokens/s / measured bf16 matmul rate (same run, 8192^3 GEMMs), with
  FLOPs/token = 6 N_student + 2 N_teacher + attention (causal: 6 S d per student attention
  layer for fwd+bwd, 2 S d per teacher layer for fwd; S = sequence, d = heads x head dim).
  N excludes the input embedding (its lookup is no matmul); tied LM heads count once.
  Checkpointing's recompute is not counted (the usual MFU convention), nor SSD FLOPs;
- peak memory (torch.cuda.max_memory_allocated);
- time split: per-module fwd+bwd CUDA-event timings of one Mamba mixer (SSD path), one
  attention mixer and one MLP at seq 8192, scaled by their counts in student and teacher.

Usage: ``PYTHONPATH=src python studies/train.py --out studies/results/train_h200.json [--layers N]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def matmul_rate(n: int = 8192, iters: int = 30) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        a @ b
    e.record()
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (s.elapsed_time(e) / 1e3)


def n_matmul_params(model) -> int:
    emb = model.get_input_embeddings().weight
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p is emb and model.get_output_embeddings().weight is not emb:
            continue  # untied input embedding: a lookup
        total += p.numel()
    return total


def time_module(fn, iters=5) -> float:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="studies/results/train_h200.json")
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=0, help="reduce both models to N layers (0: full 28)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    args = ap.parse_args()

    from m1.config import HybridConfig
    from m1.ops import dispatch
    from m1.train.losses import chunked_divergence
    from m1.modeling import HybridForCausalLM

    torch.manual_seed(0)
    dev = torch.device("cuda")
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
                 "seq": args.seq, "batch": 1, "dtype": "bf16 autocast, fp32 master weights (student); bf16 teacher"}
    res["bf16_matmul_flops"] = matmul_rate()
    print("matmul TFLOP/s", res["bf16_matmul_flops"] / 1e12, flush=True)

    s_cfg = HybridConfig.from_name("m1-3b")
    t_cfg = HybridConfig.from_name("llama-3.2-3b")
    if args.layers:
        s_cfg = HybridConfig.from_name("m1-3b", num_hidden_layers=args.layers, attention_layers=[i for i in s_cfg.attention_layers if i < args.layers])
        t_cfg = HybridConfig.from_name("llama-3.2-3b", num_hidden_layers=args.layers, attention_layers=list(range(args.layers)))
    res["layers"] = s_cfg.num_hidden_layers
    with torch.device(dev):
        student = HybridForCausalLM(s_cfg).float()
        teacher = HybridForCausalLM(t_cfg).to(torch.bfloat16)
    teacher.eval().requires_grad_(False)
    student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)
    n_s, n_t = n_matmul_params(student), n_matmul_params(teacher)
    d_attn = s_cfg.num_attention_heads * s_cfg.head_dim
    S = args.seq
    flops_tok = 6 * n_s + 2 * n_t + 6 * S * d_attn * len(s_cfg.attention_layers) + 2 * S * d_attn * t_cfg.num_hidden_layers
    res.update(n_student=n_s, n_teacher=n_t, flops_per_token=flops_tok, attention_layers=s_cfg.attention_layers)

    ids = torch.randint(0, s_cfg.vocab_size, (1, S), device=dev)
    x_probe = torch.zeros(1, device=dev, dtype=torch.bfloat16)
    res["ops"] = {op: dispatch.chosen_name(op, x_probe) for op in ("ssd_chunked", "causal_conv1d", "gated_rms_norm")}

    def step():
        with torch.no_grad():
            t_hidden = teacher.model(input_ids=ids).last_hidden_state[0, :-1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = student(input_ids=ids, chunked_loss=lambda h, head: chunked_divergence(
                h[0, :-1], t_hidden, head, teacher.lm_head, "reverse_kl", args.chunk)).loss / (S - 1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    res["step_seconds"] = dt
    res["tokens_per_s"] = S / dt
    res["mfu"] = flops_tok * S / dt / res["bf16_matmul_flops"]
    res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    res["loss"] = float(loss)
    print(json.dumps({k: res[k] for k in ("step_seconds", "tokens_per_s", "mfu", "peak_memory_gib")}), flush=True)

    # ---- time split: one module of each kind, fwd+bwd at seq S in bf16 autocast, scaled by counts

    h = torch.randn(1, S, s_cfg.hidden_size, device=dev, requires_grad=True)
    pos = torch.arange(S, device=dev)[None]
    rope = student.model.rotary_emb(pos, torch.bfloat16)
    m_layer = student.model.layers[next(i for i in range(s_cfg.num_hidden_layers) if i not in s_cfg.attention_layers)]
    a_layer = student.model.layers[s_cfg.attention_layers[0]]

    def fb(fn):
        def run():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = fn()
            y.float().sum().backward()
        return run

    def fwd(fn):
        def run():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                fn()
        return run

    mamba = time_module(fb(lambda: m_layer.mamba(h, token_mask=None, cache=None, cu_seqlens=None)))
    attn = time_module(fb(lambda: a_layer.self_attn(h, rope, None, None)))
    mlp = time_module(fb(lambda: m_layer.shared_mlp(h)))
    t_layer = teacher.model.layers[0]
    hb = h.detach().to(torch.bfloat16)
    t_attn = time_module(fwd(lambda: t_layer.self_attn(hb, rope, None, None)))
    t_mlp = time_module(fwd(lambda: t_layer.shared_mlp(hb)))
    n_m, n_a, L = len(s_cfg.mamba_layers), len(s_cfg.attention_layers), s_cfg.num_hidden_layers
    # gradient checkpointing runs each student forward twice (forward + recompute)
    ckpt = lambda fwdbwd, f: fwdbwd + f  # noqa: E731
    mamba_f = time_module(fwd(lambda: m_layer.mamba(h, token_mask=None, cache=None, cu_seqlens=None)))
    attn_f = time_module(fwd(lambda: a_layer.self_attn(h, rope, None, None)))
    mlp_f = time_module(fwd(lambda: m_layer.shared_mlp(h)))
    split = {
        "ssd_mamba_mixers": n_m * ckpt(mamba, mamba_f),
        "attention": n_a * ckpt(attn, attn_f) + t_cfg.num_hidden_layers * t_attn,
        "mlp": L * ckpt(mlp, mlp_f) + t_cfg.num_hidden_layers * t_mlp,
    }
    tot = sum(split.values())
    res["time_split_seconds"] = split
    res["time_split_fraction"] = {k: v / tot for k, v in split.items()}
    res["time_split_vs_step"] = tot / dt
    res["per_module_seconds"] = {"mamba_fwdbwd": mamba, "mamba_fwd": mamba_f, "attn_fwdbwd": attn, "attn_fwd": attn_f,
                                 "mlp_fwdbwd": mlp, "mlp_fwd": mlp_f, "teacher_attn_fwd": t_attn, "teacher_mlp_fwd": t_mlp}
    print(json.dumps(res, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
