"""Training data: records (`m1.data`) as conversations or prompts, and tokenised for training.

- **conversations** (distill, SFT) are tokenised with the model's chat template into
  ``input_ids`` and ``completion_mask`` (1 on assistant tokens);
- **prompts** (GRPO) carry ``prompt`` turns and the gold ``answer``;
- **texts** (distillation on a raw corpus) are packed end to end, EOS between documents,
  into rows of exactly ``max_length`` tokens, every token a target.
"""

from __future__ import annotations

import logging

from m1.data import DataError, conversation, gold_from, prompt_turns, read_records, record_field, resolve_mapping

log = logging.getLogger(__name__)


def load_conversations(source: str, mapping: str = "auto", split: str = "train", limit: int | None = None) -> list[dict]:
    """``[{"prompt": turns, "completion": [assistant turn]}]`` from any supported source."""
    records = read_records(source, split, limit)
    m = resolve_mapping(mapping, records[0][1])
    out = []
    for where, r in records:
        prompt, completion = conversation(where, r, m)
        out.append({"prompt": prompt, "completion": completion})
    log.info("%s: %d conversations (mapping %s)", source, len(out), m.name)
    return out


def load_texts(source: str, mapping: str = "auto", split: str = "train", limit: int | None = None) -> list[str] | None:
    """The ``text`` field of every record when the mapping is raw text, else None (the data is conversations)."""
    m = resolve_mapping(mapping, read_records(source, split, 1)[0][1])  # the first record decides
    if m.text is None:
        return None
    records = read_records(source, split, limit)
    texts = [str(record_field(where, r, m.text, m)) for where, r in records]
    log.info("%s: %d texts (mapping %s)", source, len(texts), m.name)
    return texts


def load_prompts(source: str, mapping: str = "auto", split: str = "train", limit: int | None = None) -> list[dict]:
    """``[{"prompt": turns, "answer": gold}]`` for GRPO; every record must carry a gold answer."""
    records = read_records(source, split, limit)
    m = resolve_mapping(mapping, records[0][1])
    if m.answer is None:
        raise DataError(f"mapping {m.name!r} names no answer field; GRPO needs a gold answer per prompt")
    out = []
    for where, r in records:
        if m.messages and not m.prompt:
            prompt, _ = conversation(where, r, m)
        else:
            prompt = prompt_turns(where, r, m)
        gold = gold_from(record_field(where, r, m.answer, m), m.answer_format)
        if not gold:
            raise DataError(f"{where}: the answer field {m.answer!r} is empty")
        out.append({"prompt": prompt, "answer": gold})
    log.info("%s: %d prompts (mapping %s)", source, len(out), m.name)
    return out


# ---------------------------------------------------------------- tokenisation


def tokenize_conversation(tokenizer, prompt: list[dict], completion: list[dict], max_length: int | None = None) -> dict:
    """Chat-template ids of prompt + completion, with ``completion_mask`` 1 on the assistant tokens.

    The prompt is rendered with the generation prompt (the assistant header), so the mask
    starts exactly where generation would; the template must render the prompt as a prefix
    of the whole conversation, which is checked.
    """
    p = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    full = list(tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=False))
    if full[: len(p)] != p:
        raise DataError("the chat template does not render the prompt as a prefix of the full conversation; cannot mask the completion")
    mask = [0] * len(p) + [1] * (len(full) - len(p))
    if max_length is not None:
        full, mask = full[:max_length], mask[:max_length]
    return {"input_ids": full, "completion_mask": mask}


def tokenize_conversations(tokenizer, rows: list[dict], max_length: int | None = None):
    """A `datasets.Dataset` of tokenised conversations; rows left with no completion token are dropped."""
    import datasets

    out = {"input_ids": [], "completion_mask": []}
    dropped = 0
    for row in rows:
        t = tokenize_conversation(tokenizer, row["prompt"], row["completion"], max_length)
        if sum(t["completion_mask"]) == 0:
            dropped += 1
            continue
        out["input_ids"].append(t["input_ids"])
        out["completion_mask"].append(t["completion_mask"])
    if dropped:
        log.warning("dropped %d conversations whose completion was cut off by max_length=%s", dropped, max_length)
    if not out["input_ids"]:
        raise DataError("no conversation has a completion token left after truncation; raise max_length")
    return datasets.Dataset.from_dict(out)


def check_same_tokenizer(teacher_tok, student_tok, teacher_name: str = "teacher", student_name: str = "student") -> None:
    """Distillation compares logits token by token, so both vocabularies must be identical."""
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        only_t = sorted(set(tv) - set(sv))[:5]
        only_s = sorted(set(sv) - set(tv))[:5]
        moved = [k for k in set(tv) & set(sv) if tv[k] != sv[k]][:5]
        raise DataError(
            f"teacher and student tokenizers differ ({teacher_name}: {len(tv)} tokens, {student_name}: {len(sv)}); "
            f"distillation needs the same vocabulary. Only in teacher: {only_t}; only in student: {only_s}; "
            f"different ids: {moved}"
        )


def pack_texts(tokenizer, texts: list[str], length: int):
    """A `datasets.Dataset` of ``input_ids``/``labels`` rows of exactly `length` tokens.

    Documents are joined in file order with the tokenizer's EOS between them and cut into
    rows; the tail shorter than a row is dropped (logged). Nothing is padded and no state is
    reset at a document boundary, so teacher and student see the same causal context. Why
    packed rows, not padded documents: a corpus of short documents would otherwise spend
    most of each batch on padding.
    """
    import datasets

    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate packed documents")
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    n = len(stream) // length
    if n == 0:
        raise DataError(f"the text holds {len(stream)} tokens, fewer than one row of max_length={length}")
    rows = [stream[i * length : (i + 1) * length] for i in range(n)]
    log.info("packed %d texts into %d rows of %d tokens (%.2fM tokens; %d left over)",
             len(texts), n, length, n * length / 1e6, len(stream) - n * length)
    return datasets.Dataset.from_dict({"input_ids": rows, "labels": [list(r) for r in rows]})
