"""Data loading, field mappings, bad-data errors, and the shipped YAML configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m1.train.config import DistillConfig, GRPOConfig, SFTConfig, from_dict, load_yaml, parse_config
from m1.data import MAPPINGS, DataError, conversation
from m1.train.data import check_same_tokenizer, load_conversations, load_prompts, tokenize_conversation
from tests.train.conftest import jsonl, write_lines

REPO = Path(__file__).resolve().parents[2]


def test_malformed_line_names_file_and_line(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps({"problem": "1+1", "answer": "2"}), '{"problem": "2+2", "answer": ', "{}"])
    with pytest.raises(DataError, match=r"d\.jsonl:2:\d+: malformed JSON"):
        load_prompts(str(p))


def test_empty_dataset_fails(tmp_path):
    p = write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="empty"):
        load_conversations(str(p))
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="empty"):
        load_prompts(str(tmp_path / "empty.json"))


def test_missing_answer_field_fails_with_field_name(tmp_path):
    p = jsonl(tmp_path / "d.jsonl", [{"problem": "1+1", "answer": "2"}, {"problem": "2+2"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: record has no 'answer' field"):
        load_prompts(str(p), "deepscaler")


def test_missing_file_is_not_mistaken_for_hub_id(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_prompts(str(tmp_path / "nope.jsonl"))


def test_shipped_mappings_on_records(tmp_path):
    omi = {"problem": "What is 2+3?", "generated_solution": "2+3=5, so \\boxed{5}", "expected_answer": "5"}
    prompt, completion = conversation("x", omi, MAPPINGS["openmathinstruct2"])
    assert prompt[0]["role"] == "user" and prompt[0]["content"].startswith("What is 2+3?\n")
    assert completion == [{"role": "assistant", "content": omi["generated_solution"]}]
    r1 = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a \\boxed{1}"}], "answer": "1"}
    prompt, completion = conversation("x", r1, MAPPINGS["openr1"])
    assert prompt == [{"role": "user", "content": "q"}] and completion[0]["content"] == "a \\boxed{1}"
    p = jsonl(tmp_path / "g.jsonl", [{"question": "How many?", "answer": "step\n#### 1,234"}])
    assert load_prompts(str(p))[0]["answer"] == "1234"


def test_shared_deepscaler_prompts(shared_data):
    rows = load_prompts(str(shared_data / "train" / "math_train.json"), limit=5)
    assert len(rows) == 5 and all(r["answer"] for r in rows)
    assert rows[0]["prompt"][0]["content"].endswith("output the final answer within \\boxed{}.")


def test_completion_mask_covers_exactly_the_assistant_turn(task_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(task_dir / "teacher")
    rows = load_conversations(str(task_dir / "train.jsonl"), limit=3)
    t = tokenize_conversation(tok, rows[0]["prompt"], rows[0]["completion"])
    ids = [i for i, m in zip(t["input_ids"], t["completion_mask"]) if m]
    assert tok.decode(ids) == rows[0]["completion"][0]["content"] + tok.eos_token
    assert tok.decode(t["input_ids"][: len(t["input_ids"]) - len(ids)]).endswith("<|assistant|>")


def test_mismatched_tokenizers_fail_before_training(task_dir, tmp_path):
    from m1.tasks.tokenizer import train_tokenizer
    from m1.train import distill

    other = train_tokenizer(["Start with 5. A: add 3. What is the final number?"] * 10, vocab_size=300)
    student = tmp_path / "student"
    import shutil

    shutil.copytree(task_dir / "student", student)
    other.save_pretrained(student)
    with pytest.raises(DataError, match="tokenizers differ"):
        check_same_tokenizer(other, __import__("transformers").AutoTokenizer.from_pretrained(task_dir / "teacher"))
    cfg = DistillConfig(teacher=str(task_dir / "teacher"), student=str(student), data=str(task_dir / "train.jsonl"), out=str(tmp_path / "run"))
    with pytest.raises(DataError, match="tokenizers differ"):
        distill.build_trainer(cfg)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cls = {"distill": DistillConfig, "sft": SFTConfig, "grpo": GRPOConfig}[path.stem.split("_")[0]]
    cfg = from_dict(cls, load_yaml(path), source=str(path))
    if cls is GRPOConfig:
        from m1.train.grpo import RECIPES

        assert cfg.recipe in RECIPES
    assert getattr(cfg, "loss_normalization", getattr(cfg, "loss_type", None))


def test_config_precedence_and_unknown_keys(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("loss: forward_kl\nlearning_rate: 3.0e-4\nmax_steps: 7\n")
    cfg = parse_config(DistillConfig, ["--config", str(y), "--max-steps", "9", "--no-bf16"], "t", "t", check=False)
    assert (cfg.loss, cfg.learning_rate, cfg.max_steps, cfg.bf16) == ("forward_kl", 3e-4, 9, False)
    y.write_text("lossy: forward_kl\n")
    with pytest.raises(ValueError, match="unknown DistillConfig field"):
        parse_config(DistillConfig, ["--config", str(y)], "t", "t", check=False)


def test_grpo_defaults_are_m1_recipe():
    from m1.train.grpo import RECIPES

    cfg = parse_config(GRPOConfig, [], "t", "t", presets=RECIPES, check=False)
    assert (cfg.beta, cfg.entropy_coef, cfg.num_generations, cfg.temperature) == (0.0, 0.01, 8, 0.9)
    assert (cfg.generation_batch_size, cfg.mini_batch_size, cfg.learning_rate, cfg.epsilon) == (128, 64, 1e-6, 0.2)
    assert cfg.max_completion_length == 32768 and cfg.loss_type == "grpo"
    dapo = parse_config(GRPOConfig, ["--recipe", "dapo"], "t", "t", presets=RECIPES, check=False)
    assert (dapo.loss_type, dapo.epsilon_high, dapo.dynamic_sampling) == ("dapo", 0.28, True)
