"""`run_engine_eval`: the batched-Engine form of the eval loop writes run_eval's rows, graded by the grader, and resumes."""

from __future__ import annotations

import pytest
import torch

from m1.eval.grader import answers_equivalent
from m1.eval.loop import EvalConfig, eval_sampling, run_engine_eval
from m1.eval.samples import read_samples

from tests.helpers import save_tiny_model, tiny_tokenizer, write_problems


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    from transformers import LlamaForCausalLM

    from m1.convert import convert_from_transformer

    path = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    llama = LlamaForCausalLM.from_pretrained(str(path)).eval()
    return convert_from_transformer(llama, attention_layers=[1], mamba_heads=2, mamba_head_dim=16, mamba_groups=2,
                                    state_size=16).eval()


def _cfg(out, bench, n=4, temperature=1.0):
    return EvalConfig(model="tiny", benchmarks=[bench], out=out, n=n, chunk_size=2, seed=3,
                      sampling=eval_sampling(temperature=temperature, max_tokens=12))


def test_rows_are_graded_by_the_grader_and_a_resume_regenerates_only_missing(tmp_path, hybrid, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_problems(tmp_path / "p.jsonl", 3)
    tok = tiny_tokenizer()
    s = run_engine_eval(_cfg(tmp_path / "a", "p.jsonl"), hybrid, tok)["p.jsonl"]
    rows = read_samples(tmp_path / "a" / "samples.jsonl")
    assert len(rows) == 12 and s["problems"] == 3 and s["n"] == 4
    for r in rows:
        assert r["correct"] == answers_equivalent(r["gold"], r["answer"])
        assert r["gen_time_s"] > 0 and r["finish_reason"] in ("stop", "length")
    # Drop a chunk and one more sample: a rerun regenerates exactly those and keeps the rest. (The
    # regenerated texts use the same seeds but need not match bit for bit: a batch of other
    # sequences changes the arithmetic, and this random model's near-uniform logits flip on it.)
    import json

    dropped = {("p1", 2), ("p1", 3), ("p2", 0)}
    kept = [r for r in rows if (r["problem_id"], r["sample"]) not in dropped]
    with open(tmp_path / "a" / "samples.jsonl", "w") as f:
        for r in kept:
            f.write(json.dumps(r) + "\n")
    run_engine_eval(_cfg(tmp_path / "a", "p.jsonl"), hybrid, tok)
    again = read_samples(tmp_path / "a" / "samples.jsonl")
    assert len(again) == 12
    assert again[: len(kept)] == kept
    assert {(r["problem_id"], r["sample"]) for r in again[len(kept):]} == dropped


def test_temperature_zero_is_greedy(tmp_path, hybrid, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_problems(tmp_path / "p.jsonl", 2)
    with torch.no_grad():
        run_engine_eval(_cfg(tmp_path / "g", "p.jsonl", n=2, temperature=0.0), hybrid, tiny_tokenizer())
    rows = read_samples(tmp_path / "g" / "samples.jsonl")
    for pid in ("p0", "p1"):
        texts = {r["text"] for r in rows if r["problem_id"] == pid}
        assert len(texts) == 1
