"""Per-step host syncs and copies of `m1 distill`'s training step, with their Python call sites.

Why: on the H100 a step of SmolLM2-135M distillation spent ~45% of its wall time with the GPU
idle (studies/results/distill_cli_2026-12-06/profile_*.txt): host-device syncs (.item(),
bool(tensor), boolean-mask indexing -> nonzero) stall the launch queue, and ~1,600 copies a
step (dtype casts, .contiguous()) cost GPU time. This script counts them, per optimizer step,
for the trainer `m1 distill` builds (`m1.train.distill.build_trainer`), and names where each
comes from, so a change can be checked on CPU and the same script re-run on CUDA.

What it runs: a raw-text corpus packed into rows (every token a target), bf16 autocast, fp32
master weights, a bf16 teacher in the same process, torch.profiler (record_shapes, with_stack)
over steps [warmup, warmup + steps). The window starts and ends at `on_step_begin`, so it holds
exactly `steps` of everything a step does (batch fetch, token count, forward, backward, clip,
optimizer, callbacks). Logging (`--logging-steps`, default: never inside the window) adds its
own syncs (the logged loss, grad norm and divergence): run with `--logging-steps 1` to see them.

Without --teacher/--student/--data it builds a tiny model of the same shape *style* as the
SmolLM2-135M hybrid: 30 layers (attention at 3, 8, 13, 18, 23, 28; 24 Mamba), Mamba heads of 16
channels with one group per head and state 16, GQA attention with 3 query heads per KV head, so
per-layer call counts match the real model's (only widths, vocabulary and tokens are smaller).

    PYTHONPATH=src python studies/step_syncs.py                     # tiny model, CPU (reference ops)
    PYTHONPATH=src python studies/step_syncs.py --teacher T.gguf --student DIR --data text.jsonl.gz \
        --batch 64 --length 512 --chunk 4096                        # the real run, on CUDA
    PYTHONPATH=src python studies/step_syncs.py --ops triton-stub   # the Triton wrappers' host code, on CPU

On CUDA it also counts "Memcpy DtoH" (device-to-host copies: each is a sync), names the call sites
of the CUDA runtime's memcpy and synchronize calls (a blocking host-to-device copy also waits for the
stream), and gives the CUDA time of the copy/cast ops. On CPU, `aten::_local_scalar_dense` under
accelerate's optimizer step is the CPU fused AdamW reading its step counts (not on CUDA), and the
ones under `HostBatchFacts.__call__` look at the CPU batch (no device involved). `--json PATH` writes the counts for comparisons.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transformers import TrainerCallback  # noqa: E402

# the ops counted, and what they mean on the GPU
OPS = {
    "aten::_local_scalar_dense": "host sync: .item(), bool(tensor), int(tensor), float(tensor)",
    "aten::nonzero": "host sync: boolean-mask indexing, nonzero, masked_select",
    "aten::copy_": "copy kernel: casts, .contiguous(), .to(), clone, cat inputs",
    "aten::_to_copy": "a .to()/.float() that copies",
    "aten::contiguous": ".contiguous() calls (a copy when not already contiguous)",
    "aten::clone": "clones",
    "aten::cat": "torch.cat",
    "aten::mul": "elementwise products",
    "aten::item": ".item()",
}
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero")


def tiny_setup(work: Path, length: int) -> tuple[str, str, str]:
    """Teacher, student (converted) and a raw-text corpus in `work`, as `m1 distill` takes them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from m1.convert import convert_from_transformer
    from m1.tasks.tokenizer import train_tokenizer

    teacher_dir, student_dir, data = work / "teacher", work / "student", work / "text.jsonl"
    if (student_dir / "config.json").exists():
        return str(teacher_dir), str(student_dir), str(data)
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(400)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) + "." for _ in range(300)]
    tok = train_tokenizer(texts, vocab_size=384)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=256, num_hidden_layers=30, num_attention_heads=3,
                      num_key_value_heads=1, max_position_embeddings=4 * length, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    teacher = LlamaForCausalLM(cfg).eval()
    teacher.save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    student = convert_from_transformer(teacher, [3, 8, 13, 18, 23, 28], init="attention", mamba_heads=6, mamba_head_dim=16,
                                       mamba_groups=6, state_size=16)
    student.save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(teacher_dir), str(student_dir), str(data)


def call_site(evt) -> str:
    """Where an op comes from: the innermost Python frame above it outside torch itself (or the
    autograd node, for backward ops), and the outermost aten op under that frame (what was called)."""
    top, p = evt.name, evt.cpu_parent
    while p is not None:
        name = p.name
        if name.startswith("autograd::engine::evaluate_function: "):
            return f"backward of {name.split(': ', 1)[1]} [{top}]"
        if name.startswith("aten::"):
            top = name
        elif not (name.startswith(("<built-in", "torch/", "autograd::", "enum.py", "contextlib.py", "functools.py"))
                  or "/torch/" in name or "step_syncs.py" in name or "(" not in name):
            return f"{name} [{top}]"
        p = p.cpu_parent
    return f"(no Python frame) [{top}]"


class _NoLaunch:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **meta)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_triton_kernels(dispatch) -> None:
    """Run the Triton implementations' host code (casts, .contiguous(), chunk tables, syncs) on CPU
    tensors, with every kernel launch a no-op: the op counts are the CUDA path's, the numbers are
    garbage (uninitialised outputs). Triton's own CPU interpreter cannot stand in: the SSD kernels'
    scalar masks do not run under it (triton 3.9)."""
    import dataclasses
    import importlib

    for mod in ("m1.ops.triton.ssd", "m1.ops.triton.norm", "m1.ops.triton.fused"):
        m = importlib.import_module(mod)
        for name in dir(m):
            if name.startswith("_") and name.endswith("_kernel"):
                setattr(m, name, _NoLaunch())
    for op, impls in list(dispatch._REGISTRY.items()):
        for impl in impls:
            if impl.name == "triton":
                dispatch.register(op, dataclasses.replace(impl, applies=lambda x: True))
                break


class Window(TrainerCallback):
    """Profile from on_step_begin(warmup) to on_step_begin(warmup + steps)."""

    def __init__(self, prof, warmup: int, steps: int):
        self.prof, self.warmup, self.stop_at = prof, warmup, warmup + steps
        self.running = False

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.start()
            self.running = True
        elif state.global_step == self.stop_at and self.running:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.stop()
            self.running = False
            control.should_training_stop = True


def count(prof, steps: int, top: int) -> dict:
    totals = collections.Counter()
    sites: dict[str, collections.Counter] = {op: collections.Counter() for op in OPS}
    cuda = collections.Counter()
    runtime = collections.Counter()  # CUDA runtime calls that copy or wait, by call site
    for evt in prof.events():
        if "cudaMemcpy" in evt.name or "Synchronize" in evt.name:
            runtime[f"{evt.name} <- {call_site(evt)}"] += 1
        if evt.device_type != torch.autograd.DeviceType.CPU:
            continue
        if evt.name.startswith("aten::") and not evt.cpu_children:
            totals["leaf aten ops"] += 1  # on CUDA roughly one kernel launch each (views excepted)
        if evt.name in OPS:
            totals[evt.name] += 1
            sites[evt.name][call_site(evt)] += 1
            if evt.name == "aten::copy_" and evt.input_shapes and evt.input_shapes[0] is not None \
                    and math.prod(evt.input_shapes[0]) > 1:
                totals["aten::copy_ (>1 element)"] += 1  # not a wrapped Python scalar (CPU-side on CUDA)
        elif "Memcpy DtoH" in evt.name:
            cuda["Memcpy DtoH"] += 1
        elif "cudaStreamSynchronize" in evt.name or "cudaDeviceSynchronize" in evt.name:
            cuda[evt.name] += 1
    keys = list(OPS) + ["aten::copy_ (>1 element)", "leaf aten ops"]
    out = {"steps": steps, "per_step": {op: totals[op] / steps for op in keys},
           "sites": {op: [(s, n / steps) for s, n in c.most_common(top)] for op, c in sites.items()},
           "cuda_per_step": {k: v / steps for k, v in cuda.items()},
           "cuda_runtime_sites": [(k, v / steps) for k, v in runtime.most_common(top)]}
    if torch.cuda.is_available():
        ka = {e.key: e for e in prof.key_averages()}
        out["cuda_ms_per_step"] = {op: getattr(ka[op], "device_time_total", 0) / 1000 / steps for op in OPS if op in ka}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="")
    p.add_argument("--student", default="")
    p.add_argument("--data", default="")
    p.add_argument("--work", type=Path, default=None, help="where the tiny model and the run go (default: a temporary directory)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--chunk", type=int, default=64, help="loss_chunk_size; default: 8 chunks a step, as 64 x 512 with 4096")
    p.add_argument("--loss", default="reverse_kl")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--logging-steps", type=int, default=100_000)
    p.add_argument("--ops", default=None, help="pin every op to this implementation (m1.ops.dispatch.force), e.g. ref; "
                   "'triton-stub': the Triton wrappers run on CPU tensors with every kernel launch a no-op (counts only)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("m1.ops.dispatch").setLevel(logging.INFO)

    from m1.ops import dispatch
    from m1.train.config import DistillConfig
    from m1.train.distill import build_trainer
    from m1.train.runs import prepare_out

    tmp = tempfile.TemporaryDirectory() if a.work is None else None
    work = Path(tmp.name) if tmp else a.work
    work.mkdir(parents=True, exist_ok=True)
    teacher, student, data = (a.teacher, a.student, a.data) if a.teacher else tiny_setup(work, a.length)
    cfg = DistillConfig(teacher=teacher, student=student, data=data, data_format="text", max_length=a.length,
                        per_device_batch_size=a.batch, max_steps=a.warmup + a.steps + 1, learning_rate=3e-4, bf16=not a.no_bf16,
                        loss=a.loss, loss_chunk_size=a.chunk, save_steps=10**9, logging_steps=a.logging_steps,
                        out=str(work / "run"), report_to=[], adam_beta2=0.95)
    prepare_out(cfg)
    if not torch.cuda.is_available() and cfg.bf16:
        # transformers refuses bf16 on a CPU unless told `use_cpu`; then accelerate runs the step
        # under CPU bf16 autocast, the closest CPU stand-in for the GPU run's CUDA autocast
        import m1.train.distill as distill

        common = distill.common_args
        distill.common_args = lambda c: common(c) | {"use_cpu": True}
    trainer, _ = build_trainer(cfg)
    prof = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else []),
        record_shapes=True, with_stack=True)
    trainer.add_callback(Window(prof, a.warmup, a.steps))
    if a.ops == "triton-stub":
        stub_triton_kernels(dispatch)
        trainer.train()
    elif a.ops:
        with dispatch.force(a.ops):
            trainer.train()
    else:
        trainer.train()
    res = count(prof, a.steps, a.top)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    res["setup"] = {"device": dev, "batch": a.batch, "length": a.length, "chunk": a.chunk, "loss": a.loss, "ops": a.ops,
                    "bf16": not a.no_bf16, "model": student if a.student else "tiny (30 layers, 24 Mamba)"}
    print(f"{dev}: {a.batch} x {a.length} tokens, loss {a.loss}, chunk {a.chunk}, ops {a.ops or 'dispatch'}; per optimizer step:")
    for op, what in OPS.items():
        print(f"  {op:28s} {res['per_step'][op]:8.1f}   {what}")
        for site, n in res["sites"][op]:
            print(f"      {n:7.1f}  {site}")
    for op in ("aten::copy_ (>1 element)", "leaf aten ops"):
        print(f"  {op:28s} {res['per_step'][op]:8.1f}")
    for k, v in res["cuda_per_step"].items():
        print(f"  {k:28s} {v:8.1f}")
    for k, v in res["cuda_runtime_sites"]:
        print(f"      {v:7.1f}  {k}")
    for k, v in res.get("cuda_ms_per_step", {}).items():
        print(f"  {k:28s} {v:8.2f} ms of GPU time a step")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    if tmp:
        tmp.cleanup()
    return res


if __name__ == "__main__":
    main()
