"""Reading JSON/JSONL record files with the file and line of every problem in the error.

Benchmarks (`m1.eval.benchmarks`) and training data (`m1.data`) both read user
files; one reader keeps their error messages alike: `file:line` for a JSONL line and
`file[index]` for an item of a JSON array.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path


def iter_records(path: Path, error: type[Exception] = ValueError) -> Iterator[tuple[str, dict]]:
    """(where, record) pairs of a `.jsonl` file (one object a line) or a `.json` array file.

    Either may be gzip-compressed (`.jsonl.gz`, `.json.gz`): training corpora are large and
    are shipped that way.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    opener = (lambda: gzip.open(path, "rt")) if gz else (lambda: path.open())
    try:
        with opener() as f:
            head = f.read(64).lstrip()[:1]
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read ({'gzip' if gz else 'text'}: {e})") from None
    kind = Path(path.stem).suffix if gz else path.suffix
    if kind == ".json" or head == "[":
        try:
            with opener() as f:
                data = json.loads(f.read())
        except json.JSONDecodeError as e:
            raise error(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise error(f"{path}: a .json data file must hold one JSON array of records")
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise error(f"{path}[{i}]: record is not a JSON object")
            yield f"{path}[{i}]", r
        return
    with opener() as f:
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
