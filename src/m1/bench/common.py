"""What both `m1 bench` workloads share: the environment record, the model shapes, byte counts and JSON records."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

PROMPT = 256


@dataclass
class Env:
    device: str
    versions: dict
    date: str
    bandwidth: float  # bytes/s


def environment(bandwidth: float) -> Env:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:  # a CPU run: recorded as absent, nothing chosen from it
        versions["triton"] = None
    versions["m1_commit"] = m1_commit()
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return Env(dev, versions, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), bandwidth)


def m1_commit() -> str | None:
    """The commit measured: `M1_COMMIT` where set, else `git rev-parse --short HEAD`.

    Why the variable first: a tree copied onto another machine (the GPU machine's working-tree copy) can carry git
    metadata of an older commit; its HEAD named bc68328 for a run of 91a7445 on 2026-12-07.
    """
    if os.environ.get("M1_COMMIT"):
        return os.environ["M1_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


def copy_bandwidth(gib: float = 4.0) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read plus bytes written (median of 20)."""
    n = int(gib * 2**30) // 2
    a = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    times = []
    for i in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n * 2 / sorted(times)[len(times) // 2]


def tiny_overrides(name: str) -> dict:
    """A named shape shrunk for CPU smoke runs: 4 layers, width 64, the shape's kind of layer mix."""
    from m1.config import NAMED_SHAPES

    s = NAMED_SHAPES[name]
    all_attention = len(s.attention_layers) == s.num_hidden_layers
    return dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, attention_layers=list(range(4)) if all_attention else [1, 3],
                mamba_heads=4, mamba_head_dim=16, mamba_groups=4, state_size=16, max_position_embeddings=65536)


def build_model(name: str, dtype=torch.bfloat16, device: str = "cuda", tiny: bool = False):
    """A randomly initialised model of a named shape (`HybridConfig.from_name`), seed 0."""
    from m1.config import HybridConfig
    from m1.modeling import HybridForCausalLM

    cfg = HybridConfig.from_name(name, **(tiny_overrides(name) if tiny else {}))
    torch.manual_seed(0)
    with torch.device(device):
        model = HybridForCausalLM(cfg)
    return model.to(dtype).eval()


def weight_bytes(model) -> int:
    """Bytes of the model's distinct parameters (tied weights once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def record(env: Env, model_name: str, model, **fields) -> dict:
    """One JSON record of the fixed workload: the model, its size, the environment and `fields`."""
    rec = dict(model=model_name, engine=fields.pop("engine", "m1"), param_count=sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values()),
               device=env.device, versions=env.versions, date=env.date, copy_bandwidth_gbs=env.bandwidth / 1e9)
    rec.update(fields)
    return rec


def write_records(out: Path, name: str, records: list[dict]) -> None:
    """Rewrite out/name with every record so far (after every point: a cut-off run keeps what it measured)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(records, indent=1))


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
