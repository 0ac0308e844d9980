"""The Engine is the default generation backend of `m1 eval` and `m1 scaling` (CPU, tiny Llama)."""

import json

import pytest

from m1.eval.cli import eval_main
from m1.engine import SamplingParams
from m1.eval.generation import EngineGenerator, load_generator

from tests.helpers import save_tiny_model, write_problems


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_engine_backend_on_a_llama_checkpoint_equals_hf_greedy(tiny_dir):
    eng, _ = load_generator("engine", str(tiny_dir))
    hf, _ = load_generator("hf", str(tiny_dir), device="cpu")
    assert isinstance(eng, EngineGenerator) and eng.model is not None
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12, seed=0)
    for prompt in ("What is 1+1?", "abc"):
        a = eng.generate([prompt], [greedy])[0][0]
        b = hf.generate([prompt], [greedy])[0][0]
        assert (a.text, a.num_tokens, a.finish_reason) == (b.text, b.num_tokens, b.finish_reason)


def test_engine_limits_max_tokens_to_its_context(tiny_dir):
    eng, _ = load_generator("engine", str(tiny_dir))
    out = eng.generate(["abc"], [SamplingParams(n=2, temperature=0.8, max_tokens=10**6, seed=1)])[0]
    assert len(out) == 2 and all(s.finish_reason in ("stop", "length") for s in out)


def test_eval_defaults_to_the_engine(tmp_path, tiny_dir):
    problems = write_problems(tmp_path / "toy.jsonl", n=2)
    out = tmp_path / "run"
    assert eval_main(["--model", str(tiny_dir), "--benchmark", str(problems), "--n", "2", "--chunk-size", "2",
                      "--max-tokens", "6", "--out", str(out)]) == 0
    assert "engine backend" in (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["benchmarks"][str(problems)]["problems"] == 2


def test_self_verifier_runs_on_the_engine_backend(tmp_path, tiny_dir):
    """`--verifier self` scores with the policy's forward pass, which the engine backend exposes
    too (its all-attention hybrid of a Llama checkpoint): same score as on the hf backend, and
    `m1 eval --verifier self` no longer needs `--backend hf`."""
    from m1.eval.verifiers import load_verifier

    eng, tok = load_generator("engine", str(tiny_dir))
    hf, _ = load_generator("hf", str(tiny_dir), device="cpu")
    problem, solution = "What is 1+1?", "1+1 = 2, so the answer is \\boxed{2}."
    s_eng = load_verifier("self", eng.model, tok).score(problem, solution)
    s_hf = load_verifier("self", hf.model, tok).score(problem, solution)
    assert s_eng == pytest.approx(s_hf, abs=1e-4)
    problems = write_problems(tmp_path / "toy.jsonl", n=2)
    out = tmp_path / "run"
    assert eval_main(["--model", str(tiny_dir), "--benchmark", str(problems), "--n", "2", "--chunk-size", "2",
                      "--max-tokens", "6", "--verifier", "self", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["benchmarks"][str(problems)]
    assert set(summary["verify@k"]) == {"1", "2"}


def test_likelihood_verifier_scores_the_least_likely_token(tmp_path, tiny_dir):
    """`lm:PATH`: sigmoid(score) is the smallest probability the verifier model gives a completion
    token after the policy's prompt, computed here independently with transformers' model;
    `m1 eval --verifier lm:PATH` writes verify@k from it."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from m1.eval.benchmarks import PromptConfig, build_prompt
    from m1.eval.verifiers import LikelihoodVerifier, load_verifier, min_prob_logit

    v = load_verifier(f"lm:{tiny_dir}", prompt=PromptConfig())
    assert isinstance(v, LikelihoodVerifier)
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()
    problem, solution = "What is 1+1?", "1+1 = 2, so the answer is \\boxed{2}."
    prefix = tok(build_prompt(problem, tok, PromptConfig()), add_special_tokens=False)["input_ids"]
    tail = tok(solution, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(hf(torch.tensor([prefix + tail])).logits[0].double(), -1)
    p_min = min(probs[len(prefix) - 1 + i, t].item() for i, t in enumerate(tail))
    score = v.score(problem, solution)
    assert 1 / (1 + math.exp(-score)) == pytest.approx(p_min, rel=1e-3)
    assert min_prob_logit(math.log(0.25)) == pytest.approx(math.log(0.25 / 0.75))
    assert min_prob_logit(-1e-12) > 15  # p ~ 1 stays finite
    problems = write_problems(tmp_path / "toy.jsonl", n=2)
    out = tmp_path / "run"
    assert eval_main(["--model", str(tiny_dir), "--benchmark", str(problems), "--n", "2", "--chunk-size", "2",
                      "--max-tokens", "6", "--verifier", f"lm:{tiny_dir}", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["benchmarks"][str(problems)]
    assert set(summary["verify@k"]) == {"1", "2"}


def test_a_gguf_teacher_evaluates_on_both_backends(tmp_path):
    """`m1 eval --model teacher.gguf`: the teacher a user often has only as GGUF, greedy, same text on both backends."""
    from m1.cli import main

    from tests.convert.test_smollm2 import GGUF, INSTALL

    if GGUF is None:
        pytest.skip(f"SmolLM2 GGUF not installed ({INSTALL})")
    bench = write_problems(tmp_path / "toy.jsonl", n=1)
    texts = {}
    for backend in ("engine", "hf"):
        out = tmp_path / backend
        assert main(["eval", "--model", str(GGUF), "--benchmark", str(bench), "--n", "1", "--temperature", "0",
                     "--max-tokens", "8", "--backend", backend, "--out", str(out)]) == 0
        texts[backend] = [json.loads(line)["text"] for line in open(out / "samples.jsonl")]
    assert texts["engine"] == texts["hf"] and texts["engine"][0].strip()
