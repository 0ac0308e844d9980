"""The task tokenizer: digit-level numbers, round trips, chat template, hard/easy lengths."""

from __future__ import annotations

import statistics

import pytest

from m1.tasks import make_split
from m1.tasks.encode import IGNORE_INDEX, collate, encode_example, prompt_ids
from m1.tasks.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    train = make_split("easy", 1500, seed=0) + make_split("hard", 1500, seed=0)
    return train_tokenizer([p.prompt for p in train] + [p.solution for p in train])


def test_vocab_is_small_and_has_the_special_tokens(tok):
    assert len(tok) <= 512
    assert tok.bos_token and tok.eos_token and tok.pad_token
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.padding_side == "left"


def test_numbers_are_digit_tokens(tok):
    ids = tok("A: add 5: 37+5=42", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    for digit in "37542":
        assert digit in tokens
    assert not any(len(t) > 1 and any(c.isdigit() for c in t) for t in tokens)


def test_step_labels_are_the_same_token_in_question_and_solution(tok):
    p = make_split("hard", 1, seed=0, split="test")[0]
    q = tok.convert_ids_to_tokens(tok(p.question, add_special_tokens=False)["input_ids"])
    s = tok.convert_ids_to_tokens(tok(p.solution, add_special_tokens=False)["input_ids"])
    labels = [t for t in s if t.endswith(":Ġ") and len(t) == 3]
    assert labels and all(t in q for t in labels)


def test_round_trip_on_unseen_problems_and_arbitrary_ascii(tok):
    for p in make_split("easy", 50, seed=9, split="test") + make_split("hard", 50, seed=9, split="test"):
        for text in (p.prompt, p.solution):
            assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    odd = "Zebra ~ {x|y} 12,345.6 \t tab & 'quotes'"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


def test_chat_template_generation_prompt_and_assistant_mask(tok):
    p = make_split("easy", 1, seed=0)[0]
    text = tok.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False)
    assert text.startswith(tok.bos_token) and text.endswith("<|assistant|>")
    assert p.prompt in text
    full = tok.apply_chat_template(p.messages(with_solution=True), tokenize=False)
    assert full == text + p.solution + tok.eos_token

    enc = tok.apply_chat_template(p.messages(with_solution=True), tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ex = encode_example(tok, p)
    assert enc["input_ids"] == ex.input_ids
    assert enc["assistant_masks"] == [int(label != IGNORE_INDEX) for label in ex.labels]
    assert ex.input_ids[: len(prompt_ids(tok, p))] == prompt_ids(tok, p)
    assert ex.input_ids[-1] == tok.eos_token_id


def test_collate_pads_right_and_masks_padding(tok):
    exs = [encode_example(tok, p) for p in make_split("easy", 1, seed=0) + make_split("hard", 1, seed=0)]
    b = collate(exs, tok.pad_token_id)
    n = len(exs[0].input_ids)
    assert b["input_ids"].shape[1] == len(exs[1].input_ids)
    assert b["attention_mask"][0, n:].sum() == 0 and (b["labels"][0, n:] == IGNORE_INDEX).all()
    assert b["input_ids"][0, :n].tolist() == exs[0].input_ids


def test_hard_solutions_have_at_least_four_times_the_easy_reasoning_tokens(tok):
    def mean_tokens(difficulty):
        return statistics.mean(len(tok(p.solution)["input_ids"]) for p in make_split(difficulty, 500, seed=0, split="test"))

    assert mean_tokens("hard") >= 4 * mean_tokens("easy")


def test_save_and_reload_keeps_template_and_ids(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(str(tmp_path))
    back = AutoTokenizer.from_pretrained(str(tmp_path))
    p = make_split("hard", 1, seed=0)[0]
    assert back.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False) == tok.apply_chat_template(
        p.messages(), add_generation_prompt=True, tokenize=False
    )
    assert back(p.solution)["input_ids"] == tok(p.solution)["input_ids"]
    assert back.pad_token_id == tok.pad_token_id and back.padding_side == "left"
