"""The Engine's steps run alone, as `m1 bench` times them: prefill, random fill, placed rows, one decode step."""

import pytest
import torch

from m1.engine import Engine
from tests.engine.conftest import VOCAB, prompts_of


def test_prefill_alone_gives_the_full_forwards_last_logits(models):
    model = models["hybrid"]
    eng = Engine(model, max_batch_size=4, max_model_len=64)
    prompts = prompts_of([5, 19, 9])
    logits = eng.prefill(prompts)
    with torch.no_grad():
        want = torch.stack([model(torch.tensor([p])).logits[0, -1].float() for p in prompts])
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_size", [None, 16], ids=["cpu-default-blocks", "blocks-16"])
def test_decode_steps_over_random_state_at_a_placed_context(models, block_size):
    for kind in ("hybrid", "attention", "mamba"):
        eng = Engine(models[kind], max_batch_size=4, max_model_len=64, block_size=block_size)
        eng.capture_graphs()  # on CPU: only the weight refresh
        eng.fill_random(seed=1)
        ids = eng.place_rows(3, position=20, blocks_per_row=-(-21 // eng.block_size))  # 2 blocks of 16, 1 of 64
        tok, lp = eng.decode_step(ids)
        assert tok.shape == (3,) and bool(((tok >= 0) & (tok < VOCAB)).all()) and bool(torch.isfinite(lp).all())
        assert eng.runner.pos[:3].tolist() == [21, 21, 21]


def test_placing_more_blocks_than_the_pool_holds_is_an_error(models):
    eng = Engine(models["attention"], max_batch_size=4, max_model_len=64)  # CPU default: one 64-token block a slot
    with pytest.raises(ValueError, match="KV blocks"):
        eng.place_rows(3, position=20, blocks_per_row=2)
