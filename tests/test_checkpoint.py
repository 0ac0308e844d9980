"""Loading teacher checkpoints (m1.checkpoint)."""

import pytest


def test_gguf_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from m1.checkpoint import load_causal_lm
    from m1.errors import UserError

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(UserError, match="needs the gguf package"):
        load_causal_lm(f)
    with pytest.raises(UserError, match="does not exist"):
        load_causal_lm(tmp_path / "missing.gguf")
    with pytest.raises(UserError, match="does not exist"):
        load_causal_lm(tmp_path / "no" / "such" / "dir")
