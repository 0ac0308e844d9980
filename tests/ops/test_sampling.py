"""The untruncated draw (m1.ops.sampling): the Triton kernel against the reference, and the dispatch."""

import torch

from m1.ops.sampling import draw_ref

_INTERPRET = r"""
import json, torch
from m1.ops.sampling import draw_ref
from m1.ops.triton.sampling import draw_triton
g = torch.Generator().manual_seed(0)
res = []
for v in (1000, 5003, 9000):  # one block, a partial second block, three blocks
    b = 24
    logits = torch.randn(b, v, generator=g) * 3
    logits[3, : v // 2] = float("-inf")  # a masked half vocabulary
    logits[4, 17] = 80.0  # one token holds nearly all the mass
    logits[5, 100] = logits[5, 200] = logits[5].max() + 1  # a tie for the greedy argmax: the first wins
    temp = torch.tensor([0.0, 0.7, 1.0, 1.3] * 6)
    temp[5] = 0.0
    u = torch.rand(b, generator=g).clamp(1e-7, 1 - 1e-7)
    u[0], u[1], u[2] = 0.5 / (1 << 24), 1 - 0.5 / (1 << 24), 0.5  # the uniform's extremes
    tok, lp = draw_triton(logits, temp, u)
    rtok, rlp = draw_ref(logits, temp, u)
    # where the tokens differ, how far the target lies from the reference CDF's step at the kernel's token
    t = torch.where(temp > 0, temp, torch.ones_like(temp))
    probs = torch.softmax(logits / t[:, None], -1)
    cdf = probs.cumsum(-1)
    target = u * cdf[:, -1]
    gaps = []
    for i in (tok != rtok).nonzero().flatten().tolist():
        k = int(tok[i])
        gaps.append(min(abs(float(cdf[i, k] - target[i])), abs(float((cdf[i, k - 1] if k else 0.0) - target[i]))))
    # the log-probability of the token each drew (where they differ, each at its own token)
    at_tok = torch.log_softmax(logits / t[:, None], -1).gather(1, tok[:, None]).squeeze(1)
    res.append(dict(v=v, same=int((tok == rtok).sum()), rows=b, gaps=gaps, differ=(tok != rtok).nonzero().flatten().tolist(),
                    lp=float((lp - at_tok).abs().max()), lp_same=float((lp - rlp)[tok == rtok].abs().max()),
                    dtype=[str(tok.dtype), str(lp.dtype)], masked_ok=bool((tok[3] >= v // 2).item()),
                    greedy5=int(tok[5]), peak=int(tok[4])))
# logits as the LM head writes them on a GPU (bf16): the kernel upcasts as it loads, so it draws exactly what it
# draws from the fp32 copy
x16 = (torch.randn(24, 5003, generator=g) * 3).to(torch.bfloat16)
temp = torch.tensor([0.0, 0.7, 1.0, 1.3] * 6)
u = torch.rand(24, generator=g).clamp(1e-7, 1 - 1e-7)
(a, la), (b32, lb) = draw_triton(x16, temp, u), draw_triton(x16.float(), temp, u)
res.append(dict(bf16_same=bool(torch.equal(a, b32) and torch.equal(la, lb))))
print(json.dumps(res))
"""


def test_triton_draw_matches_the_reference_under_the_interpreter():
    """Same tokens as the reference (a difference allowed only where the uniform lies within rounding of a
    CDF step), the same log-probabilities, the first of tied maxima at T = 0, never a token of zero
    probability, and the uniform's extremes handled; vocabularies of one, two and three blocks."""
    import json
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", _INTERPRET], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    *rows, bf16 = json.loads(res.stdout.strip().splitlines()[-1])
    assert bf16 == {"bf16_same": True}
    for r in rows:
        assert r["same"] >= r["rows"] - 1 and all(gap < 1e-5 for gap in r["gaps"]), r
        assert r["lp"] < 1e-4 and r["lp_same"] < 1e-4, r
        assert r["dtype"] == ["torch.int64", "torch.float32"], r
        assert r["masked_ok"] and r["greedy5"] == 100 and r["peak"] == 17, r


def test_reference_draw():
    """T = 0 rows take the argmax with the raw log_softmax; sampled rows invert the CDF of softmax(x / T)."""
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]))
    temp = torch.tensor([0.0, 1.0, 1.0])
    u = torch.tensor([0.99, 0.25, 0.35])  # CDF 0.1, 0.3, 0.6, 1.0: 0.25 -> token 1, 0.35 -> token 2
    tok, lp = draw_ref(logits, temp, u)
    assert tok.tolist() == [3, 1, 2]
    assert torch.allclose(lp, torch.log(torch.tensor([0.4, 0.2, 0.3])), atol=1e-6)


def test_cpu_dispatches_to_the_reference():
    from m1.ops import dispatch

    assert dispatch.chosen_name("draw", torch.zeros(2, 4)) == "ref"
    assert [i.name for i in dispatch._REGISTRY["draw"]] == ["triton", "ref"]


def test_reduced_precision_logits_draw_as_their_fp32_copy():
    """The runner hands the LM head's logits over as they are (bf16 on a GPU); both sampler paths compute in
    fp32, so the tokens and log-probabilities are those of the fp32 copy, exactly."""
    from m1.engine.sampler import sample

    g = torch.Generator().manual_seed(7)
    x = (torch.randn(12, 300, generator=g) * 3).to(torch.bfloat16)
    temp = torch.tensor([0.0, 0.7, 1.0] * 4)
    top_p, top_k = torch.tensor([1.0, 0.9, 1.0] * 4), torch.tensor([0, 0, 20] * 4)
    key, counter = torch.arange(12) * 7919, torch.full((12,), 5)
    for truncate in (False, True):
        a = sample(x, temp, top_p, top_k, key, counter, truncate)
        b = sample(x.float(), temp, top_p, top_k, key, counter, truncate)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].dtype == torch.float32
