"""Every bad input a new user is likely to type, run through the real CLI.

Each must give exactly one stderr line, `m1 <command>: error: ...`, that names the field,
the path or the file:line; exit 2; leave no output directory; and with `--debug` show the
traceback. Validation runs before any model loads, so no test here loads a model: a
"model directory" is a directory with a config.json, which is all validation looks at.

Every case runs through `m1.cli.main`, the function `python -m m1.cli` calls; a few run as
real subprocesses too (each one imports torch, and for the train commands TRL, again), to
check that nothing else (a warning, a log line) reaches stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from m1 import cli
from m1.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"
LINE = re.compile(r"^m1 (\w+): error: (.+)$")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", M1_DEBUG="")
    return env


def run_cli(*argv: str, debug: bool = False) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "m1.cli"] + (["--debug"] if debug else []) + list(argv)
    return subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)


def assert_one_line(stderr: str, command: str, *needles: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    m = LINE.match(lines[0])
    assert m and m.group(1) == command, lines[0]
    for n in needles:
        assert n in m.group(2), (n, lines[0])
    return m.group(2)


@pytest.fixture
def files(tmp_path):
    """A fake model directory, a good benchmark, and bad data files."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "notamodel").mkdir()
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n" + '{"problem": "b" "answer": "2"}\n')
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text(json.dumps({"problem": "a", "answer": "1"}) + "\n" + json.dumps({"problem": "b"}) + "\n")
    convs = tmp_path / "convs.jsonl"
    convs.write_text(json.dumps({"prompt": "1+1?", "completion": "2"}) + "\n")
    return tmp_path


# The column json itself reports for bad.jsonl line 2: the position of `"answer"`, 1-based.
BAD_COL = '{"problem": "b" "answer": "2"}'.index('"answer"') + 1


def eval_cases(t: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (argv after `eval`, substrings the one line must hold)."""
    m, good = str(t / "model"), str(t / "good.jsonl")
    return {
        "missing model dir": (["--model", str(t / "no" / "such" / "model"), "--benchmark", good],
                              ["--model", "does not exist", "no/such/model"]),
        "relative missing model dir": (["--model", "./nope", "--benchmark", good], ["--model", "'nope'", "does not exist"]),
        "not a model dir": (["--model", str(t / "notamodel"), "--benchmark", good], ["--model", "no config.json"]),
        "missing jsonl": (["--model", m, "--benchmark", str(t / "missing.jsonl")],
                          ["--benchmark", "missing.jsonl", "does not exist"]),
        "unknown benchmark": (["--model", m, "--benchmark", "math5000"], ["--benchmark", "unknown benchmark 'math5000'"]),
        "malformed json line": (["--model", m, "--benchmark", str(t / "bad.jsonl")], [f"bad.jsonl:2:{BAD_COL}: malformed JSON"]),
        "record without answer": (["--model", m, "--benchmark", str(t / "nofield.jsonl")], ["nofield.jsonl:2: no answer"]),
        "missing data dir": (["--model", m, "--benchmark", "math500", "--data-dir", str(t / "nodata")],
                             ["--data-dir", "nodata", "does not exist"]),
        "data dir without the file": (["--model", m, "--benchmark", "aime24", "--data-dir", str(t)],
                                      ["--data-dir", "aime24", "does not exist"]),
        "zero samples": (["--model", m, "--benchmark", good, "--n", "0"], ["--n: must be at least 1"]),
        "top-p out of range": (["--model", m, "--benchmark", good, "--top-p", "1.5"], ["--top-p"]),
        "negative temperature": (["--model", m, "--benchmark", good, "--temperature", "-1"], ["--temperature"]),
        "template without placeholder": (["--model", m, "--benchmark", good, "--prompt-template", "solve it"],
                                         ["--prompt-template", "{problem}"]),
        "unknown verifier": (["--model", m, "--benchmark", good, "--verifier", "magic"], ["--verifier", "magic"]),
        "missing verifier model": (["--model", m, "--benchmark", good, "--verifier", f"rm:{t / 'no' / 'rm'}"],
                                   ["--verifier rm:PATH", "does not exist"]),
    }


def test_eval_bad_inputs(files, capsys):
    out = files / "out"
    for name, (argv, needles) in eval_cases(files).items():
        assert cli.main(["eval", *argv, "--out", str(out)]) == 2, name
        assert_one_line(capsys.readouterr().err, "eval", *needles)
        assert not out.exists(), name


@pytest.mark.parametrize("name", ["missing model dir", "missing jsonl", "malformed json line"])
def test_eval_real_entry_point(files, name):
    argv, needles = eval_cases(files)[name]
    r = run_cli("eval", *argv, "--out", str(files / "out"))
    assert r.returncode == 2, r.stderr
    assert_one_line(r.stderr, "eval", *needles)
    assert not (files / "out").exists()


def test_scaling_bad_inputs(files, capsys):
    out = files / "out"
    assert cli.main(["scaling", "--model", str(files / "model"), "--model", str(files / "gone" / "m2"),
                     "--benchmark", str(files / "good.jsonl"), "--out", str(out)]) == 2
    assert_one_line(capsys.readouterr().err, "scaling", "--model", "gone/m2", "does not exist")
    r = run_cli("scaling", "--model", str(files / "model"), "--benchmark", str(files / "bad.jsonl"), "--out", str(out))
    assert r.returncode == 2
    assert_one_line(r.stderr, "scaling", f"bad.jsonl:2:{BAD_COL}")
    assert not out.exists()


def test_eval_debug_shows_the_traceback(files):
    r = run_cli("eval", "--model", str(files / "nope" / "x"), "--benchmark", "math500", "--out", str(files / "out"), debug=True)
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr and "UserError" in r.stderr


def test_hub_failure_suggests_data_dir(files, monkeypatch, capsys):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    out = files / "out"
    assert cli.main(["eval", "--model", str(files / "model"), "--benchmark", "math500", "--out", str(out)]) == 2
    assert_one_line(capsys.readouterr().err, "eval", "--benchmark math500", "HuggingFaceH4/MATH-500", "--data-dir")
    assert not out.exists()


def test_eval_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in text and "(default: 32768)" in text and "(default: strict)" in text


# ---------------------------------------------------------------- train commands


def train_cases(t: Path) -> list[tuple[str, list[str], list[str]]]:
    m, convs, good = str(t / "model"), str(t / "convs.jsonl"), str(t / "good.jsonl")
    yaml_bad = t / "bad.yaml"
    yaml_bad.write_text("max_steps: 3\nlr: a: b\n")
    yaml_unknown = t / "unknown.yaml"
    yaml_unknown.write_text("lossy: forward_kl\n")
    return [
        ("sft", ["--model", str(t / "no" / "such" / "model"), "--data", convs], ["--model", "does not exist"]),
        ("sft", ["--model", str(t / "notamodel"), "--data", convs], ["--model", "no config.json"]),
        ("sft", ["--data", convs], ["--model", "is required"]),
        ("sft", ["--model", m], ["--data", "is required"]),
        ("sft", ["--model", m, "--data", str(t / "missing.jsonl")], ["missing.jsonl", "does not exist"]),
        ("sft", ["--model", m, "--data", str(t / "bad.jsonl")], [f"bad.jsonl:2:{BAD_COL}: malformed JSON"]),
        ("sft", ["--model", m, "--data", good], ["good.jsonl:1", "record has no", "field"]),
        ("sft", ["--model", m, "--data", convs, "--max-steps", "0"], ["--max-steps: must be at least 1"]),
        ("sft", ["--model", m, "--data", convs, "--config", str(t / "none.yaml")], ["--config", "does not exist"]),
        ("sft", ["--model", m, "--data", convs, "--config", str(yaml_bad)], ["bad.yaml:2:6: not valid YAML"]),
        ("distill", ["--teacher", "./no-teacher", "--student", m, "--data", convs], ["--teacher", "does not exist"]),
        ("distill", ["--teacher", m, "--student", str(t / "no" / "student"), "--data", convs], ["--student", "does not exist"]),
        ("distill", ["--teacher", m, "--student", m, "--data", convs, "--config", str(yaml_unknown)],
         ["unknown.yaml", "unknown DistillConfig field", "lossy"]),
        ("grpo", ["--model", m, "--prompts", str(t / "convs.jsonl"), "--recipe", "magic"], ["--recipe", "magic"]),
        ("grpo", ["--model", m, "--prompts", str(t / "nofield.jsonl")], ["nofield.jsonl:2", "'answer'"]),
        ("grpo", ["--model", m, "--prompts", str(t / "gone.jsonl")], ["--prompts", "gone.jsonl", "does not exist"]),
    ]


def test_train_bad_inputs(files, capsys):
    out = files / "run"
    for command, argv, needles in train_cases(files):
        code = cli.main([command, *argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, (command, argv, err)
        assert_one_line(err, command, *needles)
        assert not out.exists(), (command, argv)


def test_train_debug_raises(files):
    with pytest.raises(UserError, match="--model"):
        cli.main(["--debug", "sft", "--model", str(files / "nope" / "m"), "--data", str(files / "convs.jsonl"),
                  "--out", str(files / "run")])


def test_train_real_entry_point(files):
    # one train command as a subprocess (each imports TRL); the others share its code path
    argv = ["sft", "--model", str(files / "missing" / "ckpt"), "--data", str(files / "convs.jsonl"), "--out", str(files / "run")]
    r = run_cli(*argv)
    assert r.returncode == 2, r.stderr
    assert_one_line(r.stderr, "sft", "--model", "does not exist")
    assert not (files / "run").exists()
    r = run_cli(*argv, debug=True)
    assert "Traceback (most recent call last)" in r.stderr


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sft", "--help"])
    assert "(default: 100)" in " ".join(capsys.readouterr().out.split())
