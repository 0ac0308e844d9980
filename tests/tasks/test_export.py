"""JSONL export in the prompt/answer and messages/solution shapes, and reading it back."""

from __future__ import annotations

import json

from m1.tasks import make_split, messages_record, prompt_record, read_problems, write_jsonl


def test_both_shapes_round_trip(tmp_path):
    ps = make_split("easy", 5, seed=0) + make_split("hard", 5, seed=0)
    assert write_jsonl(tmp_path / "m.jsonl", map(messages_record, ps)) == 10
    write_jsonl(tmp_path / "p.jsonl", map(prompt_record, ps))
    assert read_problems(tmp_path / "m.jsonl") == ps
    assert [(p.question, p.answer, p.difficulty) for p in read_problems(tmp_path / "p.jsonl")] == [(p.question, p.answer, p.difficulty) for p in ps]

    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][1]["content"] == first["solution"] == ps[0].solution
    prompt = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert prompt["prompt"] == [{"role": "user", "content": ps[0].prompt}]
    assert prompt["answer"] == ps[0].answer
