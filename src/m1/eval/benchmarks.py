"""Math benchmarks: from the Hugging Face Hub by default, or from local JSONL files.

Every benchmark becomes a list of `BenchmarkProblem(id, problem, answer, solution)`. Field names
differ between copies of the same benchmark (`problem` vs `question`, `answer` vs
`final_answer`), so each loader accepts the usual spellings. A malformed local file fails
with its path and line number rather than a bare JSON error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from m1.data import PROMPT_SUFFIX
from m1.errors import UserError, looks_like_local_path
from m1.eval.answer import gold_answer
from m1.jsonio import iter_records

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{problem}\n" + PROMPT_SUFFIX

PROBLEM_FIELDS = ("problem", "question", "Question", "prompt")
ANSWER_FIELDS = ("answer", "final_answer", "Answer", "gold", "expected_answer")
ID_FIELDS = ("id", "unique_id", "idx", "ID")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives: its hub id (config, split) and its local file name."""

    hub_id: str
    split: str
    local_file: str
    config: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec("HuggingFaceH4/MATH-500", "test", "math500.jsonl"),
    "aime24": BenchmarkSpec("HuggingFaceH4/aime_2024", "train", "aime24.jsonl"),
    "aime25": BenchmarkSpec("math-ai/aime25", "test", "aime25.jsonl"),
    "amc23": BenchmarkSpec("math-ai/amc23", "test", "amc23.jsonl"),
    "gsm8k": BenchmarkSpec("openai/gsm8k", "test", "gsm8k_test.jsonl", config="main"),
    "olympiadbench": BenchmarkSpec("Hothan/OlympiadBench", "train", "olympiadbench.jsonl", config="OE_TO_maths_en_COMP"),
    "minerva": BenchmarkSpec("math-ai/minervamath", "test", "minerva.jsonl"),
}



class BenchmarkFormatError(UserError):
    """A benchmark row that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class BenchmarkProblem:
    """One benchmark problem; `answer` is the gold as the source wrote it. (The demo task's own
    problems are `m1.tasks.Problem`.)"""

    id: str
    problem: str
    answer: str
    solution: str | None = None

    @property
    def gold(self) -> str:
        """The gold answer normalised like an extracted answer (`####` cut, `025` -> `25`)."""
        return gold_answer(self.answer)


def _first(row: dict, fields: Iterable[str]):
    for f in fields:
        if f in row and row[f] is not None and row[f] != "":
            return row[f]
    return None


def _answer_str(v: object) -> str:
    if isinstance(v, (list, tuple)):  # OlympiadBench stores final answers as a list
        v = ", ".join(str(x).strip().strip("$") for x in v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def problem_from_row(row: dict, index: int, where: str) -> BenchmarkProblem:
    """Build a BenchmarkProblem from one record; `where` ("file:line") goes into any error."""
    if not isinstance(row, dict):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    problem = _first(row, PROBLEM_FIELDS)
    if problem is None:
        raise BenchmarkFormatError(f"{where}: no problem text (expected one of {', '.join(PROBLEM_FIELDS)})")
    answer = _first(row, ANSWER_FIELDS)
    if answer is None:
        raise BenchmarkFormatError(f"{where}: no answer (expected one of {', '.join(ANSWER_FIELDS)})")
    pid = _first(row, ID_FIELDS)
    solution = row.get("solution")
    if isinstance(solution, list):
        solution = "\n".join(map(str, solution))
    return BenchmarkProblem(id=str(index if pid is None else pid), problem=str(problem), answer=_answer_str(answer),
                   solution=None if solution is None else str(solution))


def read_jsonl(path: Path) -> list[BenchmarkProblem]:
    """Problems from a JSONL file (or a JSON array file), with file:line in every error."""
    problems = []
    for where, row in iter_records(Path(path), BenchmarkFormatError):
        problems.append(problem_from_row(row, len(problems), where))
    if not problems:
        raise BenchmarkFormatError(f"{path}: no problems in file")
    return problems


def load_benchmark(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, hub_id: str | None = None
) -> list[BenchmarkProblem]:
    """Load a named benchmark (or a JSONL/JSON path) as BenchmarkProblems.

    Order of sources: `name` itself if it is an existing file; `data_dir/<local file>` when
    `data_dir` is given (a missing file is an error, never a silent download); otherwise
    the Hub via `datasets.load_dataset(hub_id or the default id)`.
    """
    path = Path(name)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise UserError(f"--benchmark: file {name!r} does not exist")
        problems = read_jsonl(path)
        source = str(path)
    else:
        if name not in BENCHMARKS:
            hint = " (a path? it does not exist)" if looks_like_local_path(name) or path.suffix else ""
            raise UserError(f"--benchmark: unknown benchmark {name!r}{hint}; known: {', '.join(BENCHMARKS)}, or a .jsonl path")
        spec = BENCHMARKS[name]
        if data_dir is not None:
            if not Path(data_dir).is_dir():
                raise UserError(f"--data-dir: directory {str(data_dir)!r} does not exist")
            local = Path(data_dir) / spec.local_file
            if not local.exists():
                raise UserError(f"--data-dir: {str(local)!r} does not exist (benchmark {name!r} reads {spec.local_file})")
            problems = read_jsonl(local)
            source = str(local)
        else:
            problems = _load_hub(hub_id or spec.hub_id, spec, name)
            source = hub_id or spec.hub_id
    if limit is not None:
        problems = problems[:limit]
    logger.info("benchmark %s: %d problems from %s", name, len(problems), source)
    return problems


def _load_hub(hub_id: str, spec: BenchmarkSpec, name: str = "") -> list[BenchmarkProblem]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, spec.config, split=spec.split)
    except Exception as e:  # noqa: BLE001 - offline, gated, renamed: each is a user-side failure to reach the data
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--benchmark {name or hub_id}: cannot load hub dataset {hub_id!r} ({type(e).__name__}: {msg[:200]}); "
                        f"offline, pass --data-dir DIR holding {spec.local_file}") from e
    return [problem_from_row(dict(row), i, f"{hub_id}[{spec.split}] row {i}") for i, row in enumerate(ds)]


@dataclass
class PromptConfig:
    """How a problem becomes model input. `template` must contain `{problem}`."""

    template: str = DEFAULT_TEMPLATE
    system: str | None = None
    chat_template: bool = True  # use the tokenizer's chat template when it has one


def build_prompt(problem: str, tokenizer=None, config: PromptConfig | None = None) -> str:
    """M1's prompt by default: the problem, then the step-by-step/boxed instruction, as a chat turn."""
    cfg = config or PromptConfig()
    if "{problem}" not in cfg.template:
        raise UserError("--prompt-template: must contain {problem}")
    text = cfg.template.replace("{problem}", problem)
    if not cfg.chat_template or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return text
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
