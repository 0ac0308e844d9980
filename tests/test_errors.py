"""The CLI's one-line user errors (m1.errors + m1.cli)."""

import sys
import types

import pytest

from m1 import cli
from m1.config import ConfigError
from m1.errors import UserError, field_error, require_path


def _fake_command(monkeypatch, exc):
    mod = types.ModuleType("m1_fake_cmd")

    def run(argv):
        raise exc

    mod.run = run
    monkeypatch.setitem(sys.modules, "m1_fake_cmd", mod)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("m1_fake_cmd", "run", "test only"))


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    _fake_command(monkeypatch, ConfigError("attention_layers", "empty value"))
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err == "m1 fake: error: attention_layers: empty value\n"


def test_debug_shows_the_traceback(monkeypatch):
    _fake_command(monkeypatch, field_error("--x", "bad"))
    with pytest.raises(UserError, match="--x: bad"):
        cli.main(["--debug", "fake"])
    with pytest.raises(UserError):
        cli.main(["fake", "--debug"])
    monkeypatch.setenv("M1_DEBUG", "1")
    with pytest.raises(UserError):
        cli.main(["fake"])


def test_a_bug_is_not_swallowed(monkeypatch):
    _fake_command(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError):
        cli.main(["fake"])


def test_require_path(tmp_path):
    assert require_path(tmp_path, "directory") == tmp_path
    with pytest.raises(UserError, match=r"--data: file '.*nope.jsonl' does not exist"):
        require_path(tmp_path / "nope.jsonl", "file", "--data")


def test_error_classes_are_user_errors():
    from m1.eval.benchmarks import BenchmarkFormatError
    from m1.data import DataError

    for cls in (ConfigError, DataError, BenchmarkFormatError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)


def test_cpu_kernel_hints_are_silenced(monkeypatch):
    import logging

    import torch

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    from m1.logs import quiet_cpu_kernel_hints

    quiet_cpu_kernel_hints()
    log = logging.getLogger("transformers.integrations.hub_kernels")
    keep = Keep()
    log.addHandler(keep)  # on the logger itself: transformers' own loggers may not propagate to the root
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        log.warning("`selective_state_update` is falling back ... because `mamba-ssm` is not installed")
        log.warning("an unrelated warning")
        assert keep.messages == ["an unrelated warning"]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        log.warning("install `causal-conv1d` for the optimized kernel")
        assert len(keep.messages) == 2
    finally:
        log.removeHandler(keep)
