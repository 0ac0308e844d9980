import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from m1 import HybridForCausalLM, convert_from_transformer
from m1.modeling import CheckpointMismatchError
from tests.helpers import tiny_llama, tiny_qwen2


def _hybrid(chunk=8, **shape):
    shape = shape or dict(mamba_heads=8, mamba_head_dim=8, mamba_groups=8, state_size=8)
    m = convert_from_transformer(tiny_llama(), attention_layers=[1], **shape).eval()
    m.config.mamba_chunk_size = chunk
    for layer in m.model.layers:
        if not layer.is_attention:
            layer.mamba.chunk_size = chunk
            # perturb away from the init so every Mamba parameter matters in the comparisons
            with torch.no_grad():
                for p in layer.mamba.parameters():
                    p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(scope="module")
def saved_hybrid(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("hyb")
    m = _hybrid()
    m.save_pretrained(d)
    return d, m


def test_reload_and_auto_model_agree(saved_hybrid):
    d, m = saved_hybrid
    ids = torch.randint(0, 97, (2, 33))
    ours = HybridForCausalLM.from_pretrained(d).eval()
    auto = AutoModelForCausalLM.from_pretrained(d).eval()
    assert type(auto).__name__ == "GraniteMoeHybridForCausalLM"
    l_mem, l_ours, l_auto = m(ids).logits, ours(ids).logits, auto(ids).logits
    assert torch.equal(l_mem, l_ours)
    assert (l_ours - l_auto).abs().max() <= 1e-4


def test_config_json_uses_legacy_layer_types_for_vllm(saved_hybrid):
    d, _ = saved_hybrid
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["layer_types"] == ["mamba", "attention", "mamba", "mamba"]
    assert cfg["architectures"] == ["GraniteMoeHybridForCausalLM"]
    assert cfg["num_local_experts"] == 0 and cfg["position_embedding_type"] == "rope"


def test_m1_checkpoint_passes_vllm_layout_check(saved_hybrid):
    from tests.vllm_layout import check_vllm_compat

    d, _ = saved_hybrid
    cfg = json.loads((d / "config.json").read_text())
    names = set(load_file(d / "model.safetensors"))
    assert check_vllm_compat(cfg, names) == []


def test_qwen2_hybrid_matches_auto_model(tmp_path):
    m = convert_from_transformer(tiny_qwen2(), attention_layers=[2]).eval()
    m.save_pretrained(tmp_path)
    ids = torch.randint(0, 97, (2, 21))
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert (m(ids).logits - auto(ids).logits).abs().max() <= 1e-4


def _left_pad(rows, total):
    b = len(rows)
    ids = torch.zeros(b, total, dtype=torch.long)
    mask = torch.zeros(b, total, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, total - len(r) :] = r
        mask[i, total - len(r) :] = 1
    return ids, mask


def test_left_padding_never_leaks_into_state():
    m = _hybrid()
    rows = [torch.randint(1, 97, (n,)) for n in (20, 13, 7, 1)]
    ids, mask = _left_pad(rows, 20)
    ids[mask == 0] = 5  # pad content must not matter
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = m(ids, attention_mask=mask, position_ids=pos).logits
    for i, r in enumerate(rows):
        ref = m(r[None]).logits[0]
        assert (out[i, 20 - len(r) :] - ref).abs().max() <= 1e-4


def test_greedy_generate_with_cache_equals_full_forward_argmax():
    m = _hybrid()
    prompt = torch.randint(1, 97, (1, 9))
    out = m.generate(prompt, max_new_tokens=16, do_sample=False, min_new_tokens=16)
    full = m(out).logits.argmax(-1)
    assert out[0, 9:].tolist() == full[0, 8:-1].tolist()


def test_batched_left_padded_generate_equals_single_rows():
    m = _hybrid()
    rows = [torch.randint(1, 97, (n,)) for n in (12, 7, 3)]
    ids, mask = _left_pad(rows, 12)
    out = m.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    for i, r in enumerate(rows):
        single = m.generate(r[None], max_new_tokens=8, do_sample=False, min_new_tokens=8)
        assert out[i, 12:].tolist() == single[0, len(r) :].tolist()


@pytest.mark.parametrize("how", ["position_ids", "cu_seqlens"])
def test_packed_sequences_reset_state_at_boundaries(how):
    m = _hybrid()
    lens = [7, 13, 5]
    seqs = [torch.randint(1, 97, (n,)) for n in lens]
    packed = torch.cat(seqs)[None]
    if how == "position_ids":
        out = m(packed, position_ids=torch.cat([torch.arange(n) for n in lens])[None]).logits[0]
    else:
        out = m(packed, cu_seqlens=torch.tensor([0, 7, 20, 25])).logits[0]
    start = 0
    for s in seqs:
        ref = m(s[None]).logits[0]
        assert (out[start : start + len(s)] - ref).abs().max() <= 1e-4
        start += len(s)


def test_packed_gradients_match_separate_rows():
    m = _hybrid()
    m.train()
    lens = [6, 10]
    seqs = [torch.randint(1, 97, (n,)) for n in lens]
    pos = torch.cat([torch.arange(n) for n in lens])[None]
    loss_p = m(torch.cat(seqs)[None], position_ids=pos).logits.float().square().mean() * sum(lens)
    g_p = torch.autograd.grad(loss_p, [p for p in m.parameters() if p.requires_grad], allow_unused=True)
    loss_s = sum(m(s[None]).logits.float().square().mean() * len(s) for s in seqs)
    g_s = torch.autograd.grad(loss_s, [p for p in m.parameters() if p.requires_grad], allow_unused=True)
    for a, b in zip(g_p, g_s):
        if a is not None:
            assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_missing_and_unexpected_tensors_are_listed(saved_hybrid, tmp_path):
    d, _ = saved_hybrid
    tensors = load_file(d / "model.safetensors")
    del tensors["model.layers.0.mamba.A_log"]
    tensors["model.layers.0.mamba.bogus"] = torch.zeros(3)
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as e:
        HybridForCausalLM.from_pretrained(tmp_path)
    assert "model.layers.0.mamba.A_log" in str(e.value) and "model.layers.0.mamba.bogus" in str(e.value)


def test_pickle_checkpoints_are_refused(saved_hybrid, tmp_path):
    d, m = saved_hybrid
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    torch.save(m.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError):
        HybridForCausalLM.from_pretrained(tmp_path)


def test_all_mamba_model_generates_like_its_forward():
    m = convert_from_transformer(tiny_llama(), attention_layers=[]).eval()
    prompt = torch.randint(1, 97, (2, 5))
    out = m.generate(prompt, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    full = m(out).logits.argmax(-1)
    assert torch.equal(out[:, 5:], full[:, 4:-1])
