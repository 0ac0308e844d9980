"""Checkpoint files: atomic directory and file writes, and loading the teachers users bring
(a directory, a hub id or a `.gguf` file) with their tokenizers.

A checkpoint directory is written under a temporary sibling name and renamed into
place only once every file is complete, so an interrupted save leaves either the old
checkpoint or the new one, never a mixture.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file (JSON, markdown) so readers never see it half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


GGUF_INSTALL = "pip install gguf"


def _is_gguf(source) -> bool:
    return isinstance(source, (str, Path)) and str(source).lower().endswith(".gguf")


_GGUF_READERS: dict[tuple, object] = {}  # the last GGUF file parsed: (path, size, mtime) -> gguf.GGUFReader


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within this context transformers' GGUF loading parses a file once, not once per use.

    Why: transformers builds a `gguf.GGUFReader` (which parses every metadata field) for the
    config, again for the weights and again for the tokenizer, and rebuilds gguf's tensor-name
    table for every module. On SmolLM2-135M (a 49K-token vocabulary) on 2 CPU cores that is
    about 6 s per parse and 5 s of tables, most of the 23 s `m1 convert` spent loading. The
    reader is only read (its fields and memory-mapped tensors), and the table is a pure function
    of (architecture, layer count), so both are cached: the reader for the last file, keyed by
    its size and modification time so a rewritten file is parsed again.
    """
    import gguf

    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader(path, *args, **kwargs):
        if args or kwargs:  # another mode than transformers' read-only one: not shared
            return real_reader(path, *args, **kwargs)
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _GGUF_READERS:
            _GGUF_READERS.clear()
            _GGUF_READERS[key] = real_reader(path)
        return _GGUF_READERS[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=8)(real_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_map


def load_tokenizer(source):
    """The tokenizer of a checkpoint directory, hub id or `.gguf` file."""
    from transformers import AutoTokenizer

    if _is_gguf(source):
        p = Path(source)
        with _gguf_parsed_once():
            tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
            import gguf

            fields = gguf.GGUFReader(str(p)).fields  # the parse just made, not a new one
        return _special_tokens_from_gguf(tok, fields, p.name)
    return AutoTokenizer.from_pretrained(str(source))


_GGUF_SPECIAL = (("bos", "tokenizer.ggml.bos_token_id"), ("eos", "tokenizer.ggml.eos_token_id"),
                 ("pad", "tokenizer.ggml.padding_token_id"))


def _special_tokens_from_gguf(tok, fields, name: str):
    """The tokenizer's BOS, EOS and PAD set to the ids the GGUF file's metadata names, where they differ.

    Why: transformers before 5.24 builds a GPT-2-style GGUF tokenizer with the BOS token as its
    EOS (SmolLM2's file says EOS is <|im_end|>, id 2; transformers 5.17 gave <|im_start|>, id 1).
    m1 needs >= 5.24, but the GPU image of its studies has 5.17, and the mistake travels: a
    converted checkpoint saves the tokenizer, its completions never stop at the end of a turn, and
    packed training text is joined with the wrong token. The file is the authority, so each
    difference is corrected and logged; PAD only where the tokenizer has none.
    """
    for kind, key in _GGUF_SPECIAL:
        field = fields.get(key)
        if field is None:
            continue
        want = int(field.contents())
        have = getattr(tok, f"{kind}_token_id")
        if have == want or (kind == "pad" and have is not None) or not 0 <= want < len(tok):
            continue
        token = tok.convert_ids_to_tokens(want)
        setattr(tok, f"{kind}_token", token)
        log.warning("%s: the tokenizer's %s token was %s; the file's metadata says %r (id %d): using that",
                    name, kind.upper(), "unset" if have is None else f"id {have}", token, want)
    return tok


def load_causal_lm(source, dtype=None):
    """A transformers causal LM from a local directory, a hub id or a `.gguf` file.

    GGUF files load through transformers' own GGUF reader (dequantised to `dtype`, fp32 by
    default), which needs the optional `gguf` package. transformers marks a model loaded
    from GGUF as quantised and refuses to save or re-wrap it; the weights are already plain
    tensors, so the model is rebuilt as an ordinary one from its config and state dict.
    A local path that does not exist is a `UserError` naming it (transformers would take it
    for a malformed hub id).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from m1.errors import UserError

    dtype = dtype or torch.float32
    text = str(source)
    if not Path(text).expanduser().exists() and not hub_like(text):
        raise UserError(f"model path {text!r} does not exist")
    if _is_gguf(source):
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise UserError(f"{text}: loading a .gguf file needs the gguf package ({GGUF_INSTALL}, or pip install 'm1[gguf]')") from None
        p = Path(text).expanduser()
        with _gguf_parsed_once():
            loaded = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype)
        model = AutoModelForCausalLM.from_config(loaded.config, dtype=dtype)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"{text}: GGUF tensors do not match the model (missing {missing}, unexpected {unexpected})")
        if model.config.tie_word_embeddings:
            model.tie_weights()
        model.generation_config = loaded.generation_config
        return model.eval()
    return AutoModelForCausalLM.from_pretrained(text, dtype=dtype, use_safetensors=True)


def hub_like(text: str) -> bool:
    """'name' or 'owner/name' with no leading '.', '/' or '~' and no .gguf suffix may be a hub id."""
    return text.count("/") <= 1 and not text.startswith((".", "/", "~")) and not _is_gguf(text)
