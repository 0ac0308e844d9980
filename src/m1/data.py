"""Data formats m1 reads: local JSONL/JSON files or hub dataset ids, through a field mapping.

Training (`m1.train.data`) and calibration (`m1.convert.calibration_data`) both read records
this way. A record becomes one of three shapes:
- a **conversation** (distill, SFT, calibration text): ``prompt`` (chat turns before the
  answer) and ``completion`` (the assistant turn trained on);
- a **prompt** (GRPO): ``prompt`` (chat turns) and ``answer`` (the gold answer the grader
  compares against);
- a **text** (distillation on a raw corpus, calibration): one ``text`` string, no chat
  template, every token trained on.

A `FieldMapping` says which record fields hold what. Mappings ship for the formats M1
used (`MAPPINGS`); ``auto`` picks one from the first record's fields.

Errors are `DataError`s raised before any work starts: a malformed line names its file and
line, a record without a mapped field names the field and the fields it does have, and an
empty dataset says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m1.errors import UserError
from m1.jsonio import iter_records

#: M1's evaluation instruction, appended to a problem to form the user prompt (training data with
#: string prompts, the demo task, and the default benchmark template all use it).
PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."


class DataError(UserError):
    """Bad data (training or calibration), found before the work starts."""


@dataclass(frozen=True)
class FieldMapping:
    """Which record fields hold the prompt, the response and the gold answer.

    Exactly one of ``messages``, ``prompt`` or ``text`` must be set. ``prompt`` names a field
    holding either a string (the user turn; ``prompt_suffix`` is appended) or a list of
    chat turns (used as is). ``messages`` names a field holding the whole conversation:
    its last assistant turn is the completion, the turns before it the prompt.
    """

    name: str
    prompt: str | None = None
    messages: str | None = None
    completion: str | None = None  # response text (SFT/distill with ``prompt``)
    answer: str | None = None  # gold answer (GRPO)
    answer_format: str = "plain"  # "plain", or "gsm8k": the answer follows '####'
    prompt_suffix: str | None = PROMPT_SUFFIX  # appended (after a newline) to string prompts
    system: str | None = None  # optional system turn prepended to string prompts
    text: str | None = None  # raw text (no chat template): distillation on a corpus, calibration


MAPPINGS: dict[str, FieldMapping] = {
    # nvidia/OpenMathInstruct-2: problem, generated_solution, expected_answer
    "openmathinstruct2": FieldMapping("openmathinstruct2", prompt="problem", completion="generated_solution", answer="expected_answer"),
    # open-r1/OpenR1-Math-220k: messages (user, assistant), answer
    "openr1": FieldMapping("openr1", messages="messages", answer="answer"),
    # DeepScaleR-style prompt/answer (agentica-project/DeepScaleR-Preview-Dataset, ../shared/data/train/*.json)
    "deepscaler": FieldMapping("deepscaler", prompt="problem", completion="solution", answer="answer"),
    # openai/gsm8k: question, answer ('... #### 72')
    "gsm8k": FieldMapping("gsm8k", prompt="question", completion="answer", answer="answer", answer_format="gsm8k"),
    # m1.tasks exports: prompts ({"prompt": [turns], "answer"}) or messages ({"messages": [...], "answer"})
    "m1-prompts": FieldMapping("m1-prompts", prompt="prompt", answer="answer", prompt_suffix=None),
    "m1-messages": FieldMapping("m1-messages", messages="messages", answer="answer"),
    # plain text corpora ({"text": ...}, the layout of most pretraining sets)
    "text": FieldMapping("text", text="text"),
}


def resolve_mapping(name: str, first: dict) -> FieldMapping:
    """The named mapping, or for ``auto`` the first shipped mapping whose fields ``first`` has."""
    if name != "auto":
        if name not in MAPPINGS:
            raise DataError(f"unknown field mapping {name!r}; known: auto, {', '.join(MAPPINGS)}")
        return MAPPINGS[name]
    keys = set(first)
    if "messages" in keys:
        return MAPPINGS["m1-messages"] if "answer" in keys else MAPPINGS["openr1"]
    if "prompt" in keys and isinstance(first["prompt"], list):
        return MAPPINGS["m1-prompts"]
    if "generated_solution" in keys:
        return MAPPINGS["openmathinstruct2"]
    if "question" in keys:
        return MAPPINGS["gsm8k"]
    if "problem" in keys:
        return MAPPINGS["deepscaler"]
    if "text" in keys:
        return MAPPINGS["text"]
    raise DataError(f"cannot guess a field mapping from fields {sorted(keys)}; pass --data-format (one of {', '.join(MAPPINGS)})")


# ---------------------------------------------------------------- reading records

#: file names read as data (in a directory, and never mistaken for a hub id)
DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def _read_local(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) pairs; ``where`` is 'file:line' for JSONL and 'file[index]' for JSON arrays."""
    return iter_records(path, DataError)


def read_records(source: str, split: str = "train", limit: int | None = None) -> list[tuple[str, dict]]:
    """Records of a local file, a directory of them, or a hub dataset id (loaded with `datasets`)."""
    path = Path(source)
    out: list[tuple[str, dict]] = []
    if path.exists():
        files = sorted(p for p in path.iterdir() if p.name.endswith(DATA_SUFFIXES)) if path.is_dir() else [path]
        for f in files:
            for item in _read_local(f):
                out.append(item)
                if limit is not None and len(out) >= limit:
                    return out
    else:
        if source.endswith(DATA_SUFFIXES) or source.startswith((".", "/")) or source.count("/") > 1:
            raise DataError(f"{source}: no such file")
        import datasets

        try:
            ds = datasets.load_dataset(source, split=split)
        except Exception as e:  # noqa: BLE001 - offline, unknown id, gated: the user cannot reach this data
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DataError(f"{source}: cannot load hub dataset ({type(e).__name__}: {msg}); "
                            "offline, pass a local JSONL/JSON file or directory instead") from e
        for i, r in enumerate(ds):
            out.append((f"{source}[{split}][{i}]", dict(r)))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise DataError(f"{source}: the dataset is empty (no records)")
    return out


# ---------------------------------------------------------------- records -> turns


def record_field(where: str, r: dict, name: str, mapping: FieldMapping) -> Any:
    """Field `name` of record `r`; missing, a `DataError` that names the fields the record has."""
    if name not in r or r[name] is None:
        raise DataError(f"{where}: record has no {name!r} field (mapping {mapping.name!r}); fields present: {sorted(r)}")
    return r[name]


def gold_from(value: Any, fmt: str) -> str:
    text = str(value)
    if fmt == "gsm8k":
        return text.split("####")[-1].strip().replace(",", "")
    return text.strip()


def prompt_turns(where: str, r: dict, m: FieldMapping) -> list[dict]:
    """The prompt of a record with a ``prompt`` field, as chat turns."""
    value = record_field(where, r, m.prompt, m)
    if isinstance(value, list):
        return [dict(t) for t in value]
    text = str(value)
    if m.prompt_suffix:
        text = f"{text}\n{m.prompt_suffix}"
    turns = [{"role": "user", "content": text}]
    if m.system:
        turns.insert(0, {"role": "system", "content": m.system})
    return turns


def conversation(where: str, r: dict, m: FieldMapping) -> tuple[list[dict], list[dict]]:
    """(prompt turns, [assistant turn]) of one record, for SFT and distillation."""
    if m.messages:
        turns = record_field(where, r, m.messages, m)
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where}: {m.messages!r} must be a non-empty list of chat turns")
        last = max((i for i, t in enumerate(turns) if t.get("role") == "assistant"), default=None)
        if last is None:
            raise DataError(f"{where}: {m.messages!r} has no assistant turn to train on")
        return [dict(t) for t in turns[:last]], [dict(turns[last])]
    if m.text is not None:
        raise DataError(f"mapping {m.name!r} is raw text (no prompt or answer turns): `m1 distill` and `m1 convert` read it, SFT and GRPO need conversations")
    if m.completion is None:
        raise DataError(f"mapping {m.name!r} names no completion field, so it cannot feed SFT or distillation")
    completion = record_field(where, r, m.completion, m)
    return prompt_turns(where, r, m), [{"role": "assistant", "content": str(completion)}]
