"""The one eval loop: a run started one chunk per call resumes a whole benchmark per call (and back)
with the rows an uninterrupted run writes, a benchmark file seeded by its name wherever it lies."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from m1.eval.generation import Sample
from m1.eval.loop import EvalConfig, benchmark_key, chunk_seed, eval_sampling, run_eval
from m1.eval.samples import read_samples

from tests.helpers import write_problems


class Seeded:
    """A stand-in model whose sample j of a request depends only on (prompt, seed, j): whatever the
    batching, the same seeds give the same text, so the rows show the loop and its seeding alone."""

    name = "seeded"

    def __init__(self, requests_per_call: int | None, fail_after: int | None = None):
        self.requests_per_call, self.fail_after, self.calls = requests_per_call, fail_after, 0

    def generate(self, prompts, params):
        if self.fail_after is not None and self.calls == self.fail_after:
            raise KeyboardInterrupt  # a run killed mid-way
        self.calls += 1
        out = []
        for prompt, p in zip(prompts, params):
            out.append([Sample(f"{hashlib.sha256(f'{prompt}/{p.seed}/{j}'.encode()).hexdigest()[:6]} \\boxed{{{(p.seed + j) % 4}}}",
                               num_tokens=3, finish_reason="stop") for j in range(p.n)])
        return out


def _cfg(out, benchmarks):
    return EvalConfig(model="seeded", benchmarks=benchmarks, out=out, n=4, chunk_size=2, seed=7,
                      sampling=eval_sampling(temperature=1.0, max_tokens=8))


def _rows(out):
    return [{k: v for k, v in r.items() if k != "gen_time_s"} for r in read_samples(out / "samples.jsonl")]


@pytest.mark.parametrize("first, then", [(1, None), (None, 1)])
def test_a_run_started_one_way_resumes_the_other_with_identical_rows(tmp_path, first, then):
    a, b = write_problems(tmp_path / "a.jsonl", 3), write_problems(tmp_path / "b.jsonl", 2)
    benches = [str(a), str(b)]
    run_eval(_cfg(tmp_path / "full", benches), Seeded(requests_per_call=1), None)
    with pytest.raises(KeyboardInterrupt):  # chunk by chunk: 2 of a's 6 chunks; batched: a done, b not
        run_eval(_cfg(tmp_path / "part", benches), Seeded(first, fail_after=2 if first == 1 else 1), None)
    assert 0 < len(_rows(tmp_path / "part")) < len(_rows(tmp_path / "full"))
    run_eval(_cfg(tmp_path / "part", benches), Seeded(then), None)
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")
    assert len(_rows(tmp_path / "full")) == (3 + 2) * 4


def test_a_benchmark_file_is_seeded_by_its_name_wherever_it_lies(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    here = write_problems(tmp_path / "toy.jsonl", 2)
    there = shutil.copy(here, tmp_path / "elsewhere" / "toy.jsonl")
    assert benchmark_key(str(here)) == benchmark_key(str(there)) == "toy.jsonl" and benchmark_key("math500") == "math500"
    assert chunk_seed(0, "toy.jsonl", "p0", 0) != chunk_seed(0, "toy.jsonl", "p0", 2)
    run_eval(_cfg(tmp_path / "one", [str(here)]), Seeded(1), None)
    run_eval(_cfg(tmp_path / "two", [str(there)]), Seeded(None), None)
    texts = [[r["text"] for r in _rows(tmp_path / out)] for out in ("one", "two")]
    assert texts[0] == texts[1] and len(texts[0]) == 8
