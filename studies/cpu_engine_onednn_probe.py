"""Probe for issue 20's CPU target: the Engine on SmolLM2 with its fp32 GEMMs through oneDNN instead of `F.linear`.

`studies/cpu_gemm.py` showed that on a 2-core AMD EPYC with AVX-512 (family 26) `F.linear` (MKL) runs SmolLM2's
GEMMs at 130-220 GFLOP/s where oneDNN runs them at 170-455. This measures what that is worth end to end, without
changing m1: a copy of the converted model whose `nn.Linear` modules (all but q/k/v, which the Engine's decode reads
through its own stacked weight) compute through `torch._C._nn.mkldnn_linear` on a oneDNN copy of their weight, timed
by `studies/cpu_engine.py`'s own `time_engine` beside the unchanged model (twice each, alternating), then
`transformers.generate` on the same prompts (b16, b64 of `cpu_engine.py`). Not a product path: a measurement.

    M1_SHARED_DATA=../shared/data python studies/cpu_engine_onednn_probe.py attention hybrid --out studies/results/X.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.append(str(Path(__file__).resolve().parent))  # after the packages: cpu_engine.py's helpers
from cpu_engine import SIX, WORKLOADS, gsm8k_prompts, machine, smollm2_gguf, time_engine, time_generate  # noqa: E402

from m1.checkpoint import load_causal_lm, load_tokenizer  # noqa: E402
from m1.convert import convert_from_transformer  # noqa: E402

PROBED = ("b16", "b64")  # of cpu_engine.py's workloads: one sample per prompt, prompts cut to a fixed length


class OneDNNLinear(torch.nn.Linear):
    """An `nn.Linear` that multiplies through oneDNN on a oneDNN copy of its weight (made by `pack`)."""

    def pack(self) -> "OneDNNLinear":
        self.w_dnn = self.weight.detach().to_mkldnn()
        self.b_dnn = None if self.bias is None else self.bias.detach().to_mkldnn()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch._C._nn.mkldnn_linear(x.reshape(-1, shape[-1]).contiguous().to_mkldnn(), self.w_dnn, self.b_dnn).to_dense()
        return y.reshape(*shape[:-1], y.shape[-1])


def with_onednn(model):
    """A copy of `model` whose linears (but q/k/v: the Engine's decode reads their stacked copy) go through oneDNN."""
    m = copy.deepcopy(model)
    for mod in list(m.modules()):
        for name, child in list(mod.named_children()):
            if type(child) is torch.nn.Linear and name not in ("q_proj", "k_proj", "v_proj"):
                child.__class__ = OneDNNLinear
                child.pack()
    return m


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+", choices=["attention", "hybrid"])
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    teacher, tok = load_causal_lm(smollm2_gguf()).eval(), load_tokenizer(smollm2_gguf())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    result = {"machine": machine(), "threads": torch.get_num_threads(), "torch": torch.__version__, "records": []}
    for which in a.models:
        model = convert_from_transformer(teacher, list(range(30)) if which == "attention" else SIX).eval()
        fast = with_onednn(model)
        for w in PROBED:
            count, cut, n, gen = WORKLOADS[w]
            prompts = gsm8k_prompts(tok, count, cut)
            runs = [("engine, F.linear", model), ("engine, oneDNN linears", fast)] * 2  # alternating, twice
            for label, m in runs:
                r = time_engine(m, prompts, n, gen, count * n)
                result["records"].append(dict(model=f"smollm2-{which}", workload=w, method=label, **r))
                print(f"{which} {w} {label}: {r['tokens_per_s']:.1f} tok/s", flush=True)
            r = time_generate(teacher if which == "attention" else model, prompts, n, gen, pad)
            result["records"].append(dict(model=f"smollm2-{which}", workload=w, method="transformers.generate", **r))
            print(f"{which} {w} transformers.generate: {r['tokens_per_s']:.1f} tok/s", flush=True)
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
