"""Chunked divergences against a direct computation; packed SFT loss against unpacked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m1.train.losses import chunked_divergence, token_divergence


@pytest.mark.parametrize("kind", ["reverse_kl", "forward_kl", "jsd"])
def test_chunked_equals_direct_with_grads(kind):
    torch.manual_seed(0)
    n, h, v = 37, 16, 50
    hs = torch.randn(n, h, requires_grad=True)
    ht = torch.randn(n, h)
    s_head, t_head = torch.nn.Linear(h, v, bias=False), torch.nn.Linear(h, v, bias=False)
    got = chunked_divergence(hs, ht, s_head, t_head, kind, chunk_size=8)
    got.backward()
    g_chunked = hs.grad.clone(), s_head.weight.grad.clone()
    hs.grad = None
    s_head.weight.grad = None
    ref = token_divergence(F.log_softmax(s_head(hs), -1), F.log_softmax(t_head(ht), -1), kind).sum()
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_chunked[0], hs.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_chunked[1], s_head.weight.grad, rtol=1e-4, atol=1e-6)
    assert got.item() > 0
    same = chunked_divergence(ht, ht, t_head, t_head, kind, chunk_size=8)
    assert abs(same.item()) < 1e-4


def test_forward_kl_matches_torch_kl_div():
    torch.manual_seed(1)
    s, t = F.log_softmax(torch.randn(5, 11), -1), F.log_softmax(torch.randn(5, 11), -1)
    ref = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    torch.testing.assert_close(token_divergence(s, t, "forward_kl"), ref)


def test_packed_loss_equals_unpacked(task_dir):
    """TRL's padding-free collator (position_ids restart at 0) gives the same summed CE as padded rows."""
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from m1.train.data import load_conversations, tokenize_conversations
    from m1.train.model import load_student
    from m1.train.sft import labelled

    tok = AutoTokenizer.from_pretrained(task_dir / "student")
    ds = labelled(tokenize_conversations(tok, load_conversations(str(task_dir / "train.jsonl"), limit=4)))
    examples = [ds[i] for i in range(4)]
    model = load_student(task_dir / "student")
    model.eval()

    def summed_ce(batch):
        logits = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}).logits
        labels = batch["labels"]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"), (labels[:, 1:] != -100).sum()

    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=False)(examples)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        (lp, np_), (lu, nu) = summed_ce(packed), summed_ce(padded)
    assert np_ == nu
    torch.testing.assert_close(lp, lu, rtol=1e-5, atol=1e-4)
    # without the restart (one long sequence), the loss differs: the reset is what makes them equal
    glued = dict(packed)
    glued["position_ids"] = torch.arange(packed["input_ids"].shape[1])[None]
    with torch.no_grad():
        lg, _ = summed_ce(glued)
    assert abs(lg.item() - lu.item()) > 1e-2
