import json

import pytest

from m1.eval.benchmarks import BENCHMARKS, BenchmarkFormatError, PromptConfig, build_prompt, load_benchmark, read_jsonl
from m1.errors import UserError

LOCAL = ["math500", "aime24", "aime25", "amc23", "gsm8k"]


@pytest.mark.parametrize("name", LOCAL)
def test_local_benchmarks_load(shared_data, name):
    problems = load_benchmark(name, data_dir=shared_data / "benchmarks")
    assert len(problems) == {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319}[name]
    assert all(p.problem and p.gold for p in problems)
    assert len({p.id for p in problems}) == len(problems)


def test_golds_are_normalised(shared_data):
    amc = load_benchmark("amc23", data_dir=shared_data / "benchmarks")
    assert amc[0].gold == "27"  # stored as 27.0
    gsm = load_benchmark("gsm8k", data_dir=shared_data / "benchmarks", limit=1)
    assert gsm[0].gold == "18"  # after ####


def test_every_named_benchmark_has_a_hub_default():
    assert set(BENCHMARKS) == {"math500", "aime24", "aime25", "amc23", "gsm8k", "olympiadbench", "minerva"}
    assert all("/" in spec.hub_id for spec in BENCHMARKS.values())


def test_hub_path_uses_datasets(monkeypatch):
    import datasets

    seen = {}

    def fake_load(hub_id, config=None, split=None):
        seen.update(hub_id=hub_id, config=config, split=split)
        return [{"question": "1+1?", "answer": "x\n#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    problems = load_benchmark("gsm8k")
    assert seen == {"hub_id": "openai/gsm8k", "config": "main", "split": "test"}
    assert problems[0].gold == "2"


def test_jsonl_path_and_alternative_fields(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"question": "q1", "final_answer": ["3"], "idx": 7}) + "\n\n" + json.dumps({"problem": "q2", "answer": 4.0}) + "\n")
    ps = load_benchmark(str(f))
    assert [(p.id, p.problem, p.gold) for p in ps] == [("7", "q1", "3"), ("1", "q2", "4")]


def test_bad_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n" + '{"problem": "b", "answer": \n')
    with pytest.raises(BenchmarkFormatError, match=r"bad\.jsonl:2:\d+: malformed JSON"):
        read_jsonl(f)


def test_missing_field_names_file_and_line(tmp_path):
    f = tmp_path / "nofield.jsonl"
    f.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n\n" + json.dumps({"problem": "b"}) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"nofield\.jsonl:3: no answer"):
        read_jsonl(f)


def test_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="olympiadbench.jsonl.*does not exist"):
        load_benchmark("olympiadbench", data_dir=tmp_path)


def test_default_prompt_is_m1s():
    assert build_prompt("What is 1+1?", None) == (
        "What is 1+1?\nLet's think step by step and output the final answer within \\boxed{}."
    )


def test_prompt_goes_through_chat_template():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "<user>" + messages[-1]["content"] + "<assistant>"

    out = build_prompt("P", Tok(), PromptConfig(template="Solve: {problem}"))
    assert out == "<user>Solve: P<assistant>"
    with pytest.raises(ValueError):
        build_prompt("P", None, PromptConfig(template="no placeholder"))
