"""m1 and transformers' `GraniteMoeHybridForCausalLM` read one checkpoint as one function, and both
match a float64 sequential Mamba-2 scan written from the definition (`tests/mamba_seq_ref.py`).

Tiny random models in the shapes that matter: M1's state-16 geometry (head dim 16, state 16,
one group per head) and a grouped one (several heads share B/C), with chunk boundaries
crossed and a finite dt limit, so a disagreement in any piece (conv, dt softplus/limit, the
grouping of B/C to heads, chunking, the gated norm's group size, state size) shows.
Mamba parameters are pushed off their init so each one matters.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from m1 import HybridForCausalLM
from m1.config import HybridConfig
from tests.mamba_seq_ref import mamba2_mixer_seq_f64, mixer_tensors

SHAPES = {
    "state16": dict(mamba_heads=8, mamba_head_dim=16, mamba_groups=8, state_size=16),
    "grouped": dict(mamba_heads=8, mamba_head_dim=16, mamba_groups=2, state_size=16),
    "head-sized": dict(mamba_heads=4, mamba_head_dim=32, mamba_groups=4, state_size=32),
}
SEQ = 29  # three chunks of 8 and a remainder


def _config(shape: str, dt_limit) -> HybridConfig:
    return HybridConfig.create(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, attention_layers=[1], chunk_size=8, time_step_limit=dt_limit, **SHAPES[shape],
    )


def _model(shape: str, dt_limit=(0.0, float("inf"))) -> HybridForCausalLM:
    torch.manual_seed(0)
    m = HybridForCausalLM(_config(shape, dt_limit)).eval()
    with torch.no_grad():
        for layer in m.model.layers:
            if not layer.is_attention:
                mx = layer.mamba
                for p in mx.parameters():
                    p.add_(0.1 * torch.randn_like(p))
                mx.in_proj.weight.mul_(5.0)  # B, C, x of order one, so every channel of the state counts
                mx.dt_bias.add_(torch.linspace(-2.0, 2.0, mx.num_heads))  # dt from ~0.1 to ~2.5: some above a 0.5 limit
                mx.D.copy_(torch.linspace(-1.0, 1.0, mx.num_heads))
    return m


@pytest.fixture(scope="module", params=[(s, lim) for s in SHAPES for lim in [(0.0, float("inf"))]] + [("state16", (0.0, 0.5))],
                ids=lambda p: f"{p[0]}-dtlimit{p[1][1]}")
def pair(request, tmp_path_factory):
    shape, lim = request.param
    d = tmp_path_factory.mktemp(shape)
    _model(shape, lim).save_pretrained(d)
    ours = HybridForCausalLM.from_pretrained(d).eval()
    theirs = AutoModelForCausalLM.from_pretrained(d).eval()
    assert type(theirs).__name__ == "GraniteMoeHybridForCausalLM"
    assert tuple(theirs.config.time_step_limit) == tuple(lim)
    return ours, theirs


@torch.no_grad()
def test_logits_agree(pair):
    ours, theirs = pair
    ids = torch.randint(0, 97, (2, SEQ), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=1e-4)


@torch.no_grad()
def test_each_mixer_matches_the_float64_sequential_scan(pair):
    """Both sides' mixers on one input against the plain recurrence: fp32 within 1e-4, and m1 in fp64 to 1e-10."""
    ours, theirs = pair
    cfg = ours.config
    u = torch.randn(2, SEQ, cfg.hidden_size, generator=torch.Generator().manual_seed(2))
    checked = 0
    for i in cfg.mamba_layers:
        mine, tf = ours.model.layers[i].mamba, theirs.model.layers[i].mamba
        ref = mamba2_mixer_seq_f64(mixer_tensors(mine), cfg, u)
        assert ref.abs().max() > 0.1  # the comparison means something
        torch.testing.assert_close(mine(u).double(), ref, rtol=0, atol=1e-4)
        torch.testing.assert_close(tf(u).double(), ref, rtol=0, atol=1e-4)
        mine64 = HybridForCausalLM(cfg).model.layers[i].mamba.double()
        mine64.load_state_dict(mine.state_dict())
        torch.testing.assert_close(mine64(u.double()), ref, rtol=0, atol=1e-10)
        checked += 1
    assert checked == len(cfg.mamba_layers) == 2
