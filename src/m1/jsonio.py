"""Reading JSON/JSONL record files with the file and line of every problem in the error.

Benchmarks (`m1.eval.benchmarks`) and training data (`m1.data`) both read user
files; one reader keeps their error messages alike: `file:line` for a JSONL line and
`file[index]` for an item of a JSON array.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def iter_records(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """(where, record) pairs of a `.jsonl` file (one object a line) or a `.json` array file."""
    path = Path(path)
    head = path.read_text()[:1].lstrip() if path.stat().st_size else ""
    if path.suffix == ".json" or head == "[":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise error(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise error(f"{path}: a .json data file must hold one JSON array of records")
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise error(f"{path}[{i}]: record is not a JSON object")
            yield f"{path}[{i}]", r
        return
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                # the column is json's own (1-based, within the line): the message ends at e.msg so no
                # "at" is doubled, and file:line:column is the form editors jump to
                raise error(f"{path}:{lineno}:{e.colno}: malformed JSON ({e.msg})") from None
            if not isinstance(r, dict):
                raise error(f"{path}:{lineno}: line is not a JSON object")
            yield f"{path}:{lineno}", r
