import json
import math
from pathlib import Path

import pytest
import torch

from m1.eval.cli import eval_main, scaling_main
from m1.eval.generation import HFGenerator
from m1.eval.loop import EvalConfig, eval_sampling, run_eval
from m1.eval.samples import TIMING_KEYS

from tests.helpers import save_tiny_model, tiny_tokenizer, write_problems


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    return write_problems(tmp_path_factory.mktemp("bench") / "toy.jsonl")


def _strip_timing(summary: dict) -> dict:
    return {b: {k: v for k, v in s.items() if k not in TIMING_KEYS} for b, s in summary["benchmarks"].items()}


def _texts(out: Path) -> dict:
    rows = [json.loads(line) for line in open(out / "samples.jsonl")]
    return {(r["problem_id"], r["sample"]): r["text"] for r in rows}


def _hf(tiny_dir):
    from transformers import AutoModelForCausalLM

    return HFGenerator(AutoModelForCausalLM.from_pretrained(tiny_dir), tiny_tokenizer())


class Interrupted(RuntimeError):
    pass


class FailAfter:
    """A generator that dies after `calls` chunks, like a run killed mid-way."""

    def __init__(self, inner, calls):
        self.inner, self.calls, self.name = inner, calls, inner.name
        self.requests_per_call = inner.requests_per_call

    def generate(self, *a, **kw):
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        return self.inner.generate(*a, **kw)


def test_resumed_eval_matches_uninterrupted(tmp_path, tiny_dir, problems):
    def cfg(out):
        return EvalConfig(model=str(tiny_dir), benchmarks=[str(problems)], out=out, n=4, chunk_size=2,
                          sampling=eval_sampling(temperature=1.0, top_p=0.9, max_tokens=12), seed=3)

    gen, tok = _hf(tiny_dir), tiny_tokenizer()
    full = tmp_path / "full"
    run_eval(cfg(full), gen, tok)

    part = tmp_path / "part"
    with pytest.raises(Interrupted):
        run_eval(cfg(part), FailAfter(gen, 3), tok)  # 3 of 6 chunks done
    with open(part / "samples.jsonl", "a") as f:
        f.write('{"benchmark": "torn')  # a write cut off by the kill
    assert len(open(part / "samples.jsonl").read().splitlines()) == 7
    run_eval(cfg(part), gen, tok)

    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    assert _strip_timing(a) == _strip_timing(b)
    assert _texts(full) == _texts(part)
    assert len(_texts(part)) == 12


def test_resumed_eval_keeps_each_rows_extraction_mode(tmp_path, tiny_dir, problems):
    """Rows record the extraction mode they were graded with, and a resume in another mode
    is refused (one line) instead of mixing modes in one samples.jsonl and summary."""
    from m1.errors import UserError

    def cfg(mode):
        return EvalConfig(model=str(tiny_dir), benchmarks=[str(problems)], out=tmp_path / "run", n=2, chunk_size=2,
                          sampling=eval_sampling(temperature=1.0, max_tokens=8), seed=1, extraction=mode)

    gen, tok = _hf(tiny_dir), tiny_tokenizer()
    with pytest.raises(Interrupted):
        run_eval(cfg("lenient"), FailAfter(gen, 1), tok)
    with pytest.raises(UserError, match="--extraction strict: .* graded with --extraction lenient"):
        run_eval(cfg("strict"), gen, tok)
    run_eval(cfg("lenient"), gen, tok)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "samples.jsonl")]
    assert len(rows) == 6 and {r["extraction"] for r in rows} == {"lenient"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["extraction"] == "lenient"
    # rows from before rows recorded their mode take the mode of their run's summary.json
    with open(tmp_path / "run" / "samples.jsonl", "w") as f:
        f.writelines(json.dumps({k: v for k, v in r.items() if k != "extraction"}) + "\n" for r in rows[:3])
    with pytest.raises(UserError, match="graded with --extraction lenient"):
        run_eval(cfg("strict"), gen, tok)


def test_eval_cli_writes_outputs_and_resume_skips_done_problems(tmp_path, tiny_dir, problems):
    args = ["--model", str(tiny_dir), "--benchmark", str(problems), "--n", "4", "--chunk-size", "4",
            "--temperature", "0.8", "--max-tokens", "10", "--backend", "hf", "--verifier", "self"]
    out = tmp_path / "run"
    assert eval_main(args + ["--out", str(out), "--limit", "1"]) == 0
    first = _texts(out)
    assert eval_main(args + ["--out", str(out)]) == 0
    assert {k: v for k, v in _texts(out).items() if k in first} == first
    summary = json.loads((out / "summary.json").read_text())["benchmarks"][str(problems)]
    assert summary["problems"] == 3
    assert set(summary["pass@k"]) == {"1", "2", "4"} and set(summary["maj@k"]) == {"1", "2", "4"}
    assert set(summary["verify@k"]) == {"1", "2", "4"}
    lo, hi = summary["pass@1"]["ci95"]
    assert lo <= summary["pass@1"]["mean"] <= hi
    assert summary["samples_per_s"] > 0
    assert (out / "report.md").exists() and (out / "curves.png").stat().st_size > 0


def test_eval_help_documents_options(capsys):
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--model", "--benchmark", "--n", "--temperature", "--top-p", "--max-tokens", "--out", "--data-dir",
                "--limit", "--backend", "--verifier"):
        assert opt in text


def test_scaling_cli(tmp_path, problems):
    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    out = tmp_path / "scaling"
    assert scaling_main(["--model", str(a), "--model", str(b), "--benchmark", str(problems), "--n", "4",
                         "--max-tokens", "8", "--out", str(out)]) == 0
    data = json.loads((out / "scaling.json").read_text())[str(problems)]
    assert set(data) == {"0_a", "1_b"}
    for c in data.values():
        ts = [t for t, *_ in c["by_time"]]
        ks = [k for _, k, *_ in c["by_time"]]
        assert ks == sorted(ks) and all(k == min(4, math.floor(t * c["samples_per_s"])) for t, k in zip(ts, ks))
    assert (out / "scaling_toy.png").stat().st_size > 0
    assert "samples/s" in (out / "report.md").read_text()


def test_requests_per_call_fills_the_engine_slots():
    from argparse import Namespace

    from m1.eval.cli import requests_per_call

    def args(**kw):
        return Namespace(**({"requests_per_call": 0, "backend": "engine", "max_batch_size": 256, "chunk_size": 16, "n": 64} | kw))

    assert requests_per_call(args()) == 32  # 32 chunks of 16: twice the 256 slots
    assert requests_per_call(args(n=1)) == 512  # greedy: one sample a chunk
    assert requests_per_call(args(max_batch_size=100, chunk_size=64)) == 4  # rounded up
    assert requests_per_call(args(backend="hf")) == 1
    assert requests_per_call(args(requests_per_call=3)) == 3


def test_eval_rejects_bad_engine_sizes(tmp_path, tiny_dir, problems, capsys):
    from m1.cli import main

    for flag, value in (("--max-batch-size", "0"), ("--requests-per-call", "-1"), ("--memory-budget-gb", "0")):
        assert main(["eval", "--model", str(tiny_dir), "--benchmark", str(problems), "--out", str(tmp_path / "o"), flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0]
    assert not (tmp_path / "o").exists()


def test_eval_refuses_a_memory_budget_the_machine_does_not_have(tmp_path, tiny_dir, problems, capsys, monkeypatch):
    """A budget above the CPU's available memory used to be allocated until the kernel killed the run (exit 137,
    no message); now it is one line naming the option."""
    import m1.engine.cache as C
    from m1.cli import main

    monkeypatch.setattr(C, "device_memory_bytes", lambda device: 2**30)
    rc = main(["eval", "--model", str(tiny_dir), "--benchmark", str(problems), "--out", str(tmp_path / "o"), "--memory-budget-gb", "2"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("m1 eval: error")]  # beside the weight loader's bar
    assert rc == 2 and "Traceback" not in err and len(errors) == 1
    assert "memory_budget_gb: 2.00 GiB is more than this machine's available memory (1.00 GiB)" in errors[0]


def test_data_parallel_workers_get_the_engine_sizes(tmp_path, tiny_dir, problems, monkeypatch):
    """--max-batch-size, --requests-per-call and --memory-budget-gb reach each data-parallel worker's
    `load_generator`, as they reach one process's (they were once dropped there silently)."""
    import m1.eval.generation as generation
    import m1.eval.parallel as parallel
    from m1.cli import main

    passed, loaded = [], []

    def fake_run_parallel(cfg, backend, data_parallel, generator_kwargs=None):
        passed.append((data_parallel, generator_kwargs))
        parallel.run_shard(cfg, backend, 0, data_parallel, "cpu", generator_kwargs)  # one rank, in this process

    class Stop(Exception):
        pass

    def fake_load_generator(backend, model, **kw):
        loaded.append(kw)
        raise Stop

    monkeypatch.setattr(parallel, "run_parallel", fake_run_parallel)
    monkeypatch.setattr(generation, "load_generator", fake_load_generator)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # run_shard's per-rank threads: not this test's business
    with pytest.raises(Stop):
        main(["eval", "--model", str(tiny_dir), "--benchmark", str(problems), "--out", str(tmp_path / "o"), "--backend", "engine",
              "--data-parallel", "2", "--max-batch-size", "64", "--memory-budget-gb", "3", "--chunk-size", "4", "--n", "8"])
    want = {"max_batch_size": 64, "requests_per_call": 32, "memory_budget_gb": 3.0}  # 2 x 64 slots / chunks of 4
    assert passed == [(2, want)]
    assert loaded == [{"device": "cpu", **want}]
