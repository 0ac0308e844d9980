"""Verifiers for verify@k: score a (problem, completion) pair; higher means more likely correct.

Three kinds:
- `LikelihoodVerifier`: a causal LM (by default a stronger or differently trained model than
  the policy) reads the problem and the completion; the score is the logit of the smallest
  probability it gives any completion token. No training: any checkpoint is a verifier.
- `RewardModelVerifier`: a local HF sequence-classification checkpoint (an outcome reward
  model). The score is its single logit, or the log-probability of its last label.
- `SelfVerifier`: the policy judges its own solution. It reads `SELF_VERIFY_TEMPLATE` and
  the score is log p(" correct") - log p(" incorrect") after "The final answer is", each
  word scored over all its tokens, so no sampling is involved and the score is deterministic.
  It needs only the policy model's forward pass (`model(ids).logits`), which both
  generation backends expose as `generator.model`: transformers' model for `--backend hf`,
  m1's `HybridForCausalLM` (a Llama/Qwen2 checkpoint loaded as the all-attention hybrid)
  for `--backend engine`.
"""

from __future__ import annotations

import math
from typing import Protocol

SELF_VERIFY_TEMPLATE = (
    "Here is a math problem and a proposed solution.\n\n"
    "Problem:\n{problem}\n\n"
    "Proposed solution:\n{solution}\n\n"
    "Check the solution step by step. Is its final answer correct? "
    "Reply with one word: correct or incorrect."
)
# Solutions are cut to their last characters: the final answer and the steps just before it
# matter most, and a 32k-token trace would not fit the verifier's context.
MAX_SOLUTION_CHARS = 6000


class Verifier(Protocol):
    def score(self, problem: str, completion: str) -> float: ...


class LikelihoodVerifier:
    """The verifier model's probability of the completion's least likely token, as a logit.

    Why the smallest token probability: a chain of exact steps is wrong as soon as one step
    is, and a model that does one step reliably gives a wrong step a low probability even on
    chains too long for it to produce whole (the demo's teacher: 98% of 1-2 step chains right,
    29% of 6-10 step ones). The mean or the sum dilutes one bad step over many good ones; in
    the demo (100 hard problems x 16 samples of one hybrid, k=8) weighting votes by the
    minimum beat plain majority by +0.030 [0.002, 0.062], the mean by +0.018, and a reward
    model trained on 1,600 labelled samples by -0.003. ``score`` returns
    log(p / (1 - p)) so that `weighted_vote_at_k`'s sigmoid turns it back into p.

    ``model`` is any causal LM returning ``.logits``; ``prompt`` must be the policy's prompt
    format, so the verifier reads the completion in the context it was generated in.
    """

    def __init__(self, model, tokenizer, prompt=None) -> None:
        from m1.eval.benchmarks import PromptConfig

        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt or PromptConfig()

    @classmethod
    def from_pretrained(cls, path: str, prompt=None) -> "LikelihoodVerifier":
        from transformers import AutoTokenizer

        from m1.eval.generation import load_engine_model

        return cls(load_engine_model(path), AutoTokenizer.from_pretrained(path), prompt)

    def token_logprobs(self, problem: str, completion: str) -> list[float]:
        """log p(token | prompt, earlier completion tokens) for each completion token."""
        import torch

        from m1.eval.benchmarks import build_prompt

        prefix = self.tokenizer(build_prompt(problem, self.tokenizer, self.prompt), add_special_tokens=False)["input_ids"]
        tail = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not tail:
            return []
        ids = torch.tensor([prefix + tail], device=next(self.model.parameters()).device)
        with torch.no_grad():
            logp = torch.log_softmax(self.model(ids).logits[0, len(prefix) - 1:-1].float(), -1)
        return logp.gather(-1, ids[0, len(prefix):, None])[:, 0].tolist()

    def score(self, problem: str, completion: str) -> float:
        """logit of min_t p(token_t): sigmoid(score) is the least likely token's probability."""
        lps = self.token_logprobs(problem, completion)
        if not lps:
            return -30.0  # an empty completion: no solution to trust
        return min_prob_logit(min(lps))


def min_prob_logit(logprob: float) -> float:
    """log(p / (1 - p)) from log p, stable for p near 1 (log p near 0) and near 0."""
    lp = min(logprob, -1e-9)
    return lp - math.log(-math.expm1(lp))


class RewardModelVerifier:
    """An outcome reward model from a local `AutoModelForSequenceClassification` checkpoint."""

    def __init__(self, path: str, device: str = "cpu", max_length: int = 4096) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.device = device
        self.max_length = max_length

    def score(self, problem: str, completion: str) -> float:
        import torch

        enc = self.tokenizer(problem, completion[-MAX_SOLUTION_CHARS:], return_tensors="pt", truncation=True,
                             max_length=self.max_length).to(self.device)
        with torch.no_grad():
            logits = self.model(**enc).logits[0].float()
        if logits.numel() == 1:
            return float(logits[0])
        return float(torch.log_softmax(logits, -1)[-1])


class SelfVerifier:
    """The policy's own likelihood that its solution is "correct" (see the module docstring)."""

    def __init__(self, model, tokenizer, template: str = SELF_VERIFY_TEMPLATE) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.template = template

    def prompt(self, problem: str, completion: str) -> str:
        text = self.template.format(problem=problem, solution=completion[-MAX_SOLUTION_CHARS:])
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return text + "The final answer is"

    def _logprob(self, prefix_ids: list[int], word: str) -> float:
        """log p(word | prefix), summed over the word's tokens (teacher forcing)."""
        import torch

        word_ids = self.tokenizer.encode(word, add_special_tokens=False)
        ids = torch.tensor([prefix_ids + word_ids], device=next(self.model.parameters()).device)
        with torch.no_grad():
            logp = torch.log_softmax(self.model(ids).logits[0, :-1].float(), -1)
        pos = torch.arange(len(prefix_ids) - 1, ids.shape[1] - 1, device=ids.device)
        return float(logp[pos, ids[0, len(prefix_ids):]].sum())

    def score(self, problem: str, completion: str) -> float:
        """log p(" correct") - log p(" incorrect"): higher when the policy believes its answer."""
        prefix = self.tokenizer.encode(self.prompt(problem, completion), add_special_tokens=False)
        return self._logprob(prefix, " correct") - self._logprob(prefix, " incorrect")


def load_verifier(spec: str | None, policy_model=None, policy_tokenizer=None, prompt=None) -> Verifier | None:
    """`lm:PATH` -> LikelihoodVerifier, `rm:PATH` -> RewardModelVerifier, `self` -> SelfVerifier on
    the policy, None -> no verifier."""
    if not spec:
        return None
    if spec == "self":
        if policy_model is None:
            raise ValueError("--verifier self needs the policy model: pass the generator's .model (both backends have one)")
        return SelfVerifier(policy_model, policy_tokenizer)
    if spec.startswith("rm:"):
        return RewardModelVerifier(spec[3:])
    if spec.startswith("lm:"):
        return LikelihoodVerifier.from_pretrained(spec[3:], prompt)
    raise ValueError(f"unknown verifier {spec!r}; use lm:PATH, rm:PATH or self")
