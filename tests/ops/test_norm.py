import torch

from m1.ops.norm import gated_rms_norm_ref


def test_grouped_norm_normalises_each_group():
    g = torch.Generator().manual_seed(0)
    y, z = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    out = gated_rms_norm_ref(y, z, torch.ones(8), eps=0.0, group_size=4)
    grouped = out.view(2, 3, 2, 4)
    assert torch.allclose(grouped.pow(2).mean(-1), torch.ones(2, 3, 2), atol=1e-5)


def test_constant_gate_is_removed_by_the_norm():
    """Why attention init may use a constant z: norm(y * c) == norm(y) for c > 0."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(4, 16, generator=g)
    w = torch.rand(16, generator=g)
    a = gated_rms_norm_ref(y, torch.full_like(y, 3.0), w, eps=0.0, group_size=8)
    b = gated_rms_norm_ref(y, None, w, eps=0.0, group_size=8)
    assert torch.allclose(a, b, atol=1e-5)
