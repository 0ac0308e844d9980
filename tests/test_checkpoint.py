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


class _Field:
    def __init__(self, value):
        self.value = value

    def contents(self):
        return self.value


def test_gguf_special_tokens_follow_the_files_metadata(caplog):
    """transformers < 5.24 gave a GGUF tokenizer its BOS as EOS; the file's ids win, each change logged."""
    from m1.checkpoint import _special_tokens_from_gguf
    from tests.helpers import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.pad_token = None
    wrong_eos = tok.convert_ids_to_tokens(5)
    tok.eos_token = wrong_eos  # what the buggy reader produced: some other token as EOS
    fields = {"tokenizer.ggml.eos_token_id": _Field(1), "tokenizer.ggml.bos_token_id": _Field(4),
              "tokenizer.ggml.padding_token_id": _Field(0)}
    with caplog.at_level("WARNING", logger="m1.checkpoint"):
        out = _special_tokens_from_gguf(tok, fields, "m.gguf")
    assert (out.eos_token_id, out.eos_token) == (1, "<eos>")
    assert out.bos_token_id == 4 and out.pad_token_id == 0
    assert "EOS token was id 5" in caplog.text and "'<eos>' (id 1)" in caplog.text
    # agreeing ids, a PAD already set and ids outside the vocabulary change nothing
    caplog.clear()
    tok2 = tiny_tokenizer()
    fields2 = {"tokenizer.ggml.eos_token_id": _Field(1), "tokenizer.ggml.padding_token_id": _Field(7),
               "tokenizer.ggml.bos_token_id": _Field(10_000)}
    with caplog.at_level("WARNING", logger="m1.checkpoint"):
        out2 = _special_tokens_from_gguf(tok2, fields2, "m.gguf")
    assert (out2.eos_token_id, out2.pad_token_id, out2.bos_token_id) == (1, 0, None)
    assert caplog.text == ""

