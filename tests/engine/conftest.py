"""Tiny fp32 models of each layer mix, and a character tokenizer, shared by the engine tests."""

import pytest
import torch

from m1.convert import convert_from_transformer
from m1.engine import SamplingParams
from tests.helpers import tiny_llama

VOCAB = 97
KINDS = {"hybrid": [1], "attention": [0, 1, 2], "mamba": []}


def make_model(kind: str, seed: int = 0):
    teacher = tiny_llama(layers=3, seed=seed, vocab=VOCAB)
    model = convert_from_transformer(teacher, attention_layers=KINDS[kind], init="random", seed=seed).float().eval()
    # Random Mamba init has tiny dt; give the state real memory so a leak would show.
    with torch.no_grad():
        for layer in model.model.layers:
            if not layer.is_attention:
                layer.mamba.dt_bias.fill_(0.5)
                layer.mamba.conv1d.weight.normal_(0, 0.5)
    model.config.eos_token_id = None  # no end token: completions run to max_tokens unless a test sets one
    model.generation_config.eos_token_id = None
    return model


class CharTokenizer:
    """id i <-> one printable character; enough for stop strings and streaming text."""

    eos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) - 33 for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(33 + i) for i in ids)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add sync overhead (and thrash a shared 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def models():
    return {k: make_model(k) for k in KINDS}


@pytest.fixture
def tokenizer():
    return CharTokenizer()


def full_logits(model, prompt, completion):
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(completion)], device=model.device)).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) + len(completion) - 1]


def prompts_of(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def slot_churn():
    """The slot-cleanliness workload: 100 requests (mixed lengths, n of 1 to 3 forked, a stop token on every
    fourth) and 3 probes (greedy, n = 2 sampled, top-p). Returns (prompts, params, probe prompts, probe params)."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, 40, (100,), generator=g).tolist()
    maxes = torch.randint(1, 10, (100,), generator=g).tolist()
    params = [SamplingParams(n=1 + i % 3, temperature=1.0, max_tokens=m, seed=i, stop_token_ids=[i % VOCAB] if i % 4 == 0 else [])
              for i, m in enumerate(maxes)]
    probe_params = [SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                    SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=3, ignore_eos=True),
                    SamplingParams(temperature=0.7, top_p=0.9, max_tokens=16, seed=4, ignore_eos=True)]
    return prompts_of(lengths, seed=8), params, prompts_of([17, 5, 33], seed=9), probe_params


def optimizer_steps(model, prompt: list[int], steps: int = 3, lr: float = 0.01) -> None:
    """Real training steps on every parameter (AdamW updates in place, as a trainer's do), towards random next
    tokens: the greedy tokens move, and they still depend on every layer (a loss towards one token would make
    them that token whatever the inner weights, and a stale weight would go unseen)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    dev = next(model.parameters()).device
    ids = torch.tensor([prompt], device=dev)
    target = torch.randint(0, VOCAB, (1, len(prompt)), generator=torch.Generator().manual_seed(5)).to(dev)
    for _ in range(steps):
        logits = model(input_ids=ids).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
