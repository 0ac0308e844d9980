"""Calibration text as token rows: packed from a file, or sampled from the teacher itself."""

from __future__ import annotations

import logging

import torch

from m1.errors import UserError

log = logging.getLogger(__name__)


def pack_rows(token_lists: list[list[int]], seq_len: int, num_sequences: int) -> torch.Tensor:
    """Join token lists end to end and cut `num_sequences` rows of `seq_len` (fewer if the text runs out)."""
    stream: list[int] = []
    for t in token_lists:
        stream.extend(t)
        if len(stream) >= seq_len * num_sequences:
            break
    rows = min(num_sequences, len(stream) // seq_len)
    if rows == 0:
        raise UserError(f"calibration text has {len(stream)} tokens, fewer than one row of {seq_len}")
    return torch.tensor(stream[: rows * seq_len]).view(rows, seq_len)


def calibration_ids_from_file(path, tokenizer, num_sequences: int, seq_len: int) -> torch.Tensor:
    """Calibration rows from a file: JSONL/JSON records with a `text` field, or any training format m1 reads.

    A record with `text` is used as is; otherwise the record is read as a conversation
    (`m1.data`'s formats, which training reads too) and its turns are joined. Errors name the file:line.
    """
    from m1.data import DataError, conversation, read_records, resolve_mapping
    from m1.errors import require_path

    require_path(path, "calibration file", "--calibration-data")
    records = read_records(str(path))
    mapping = None
    texts = []
    for where, r in records:
        if "text" in r:
            if not isinstance(r["text"], str) or not r["text"].strip():
                raise DataError(f"{where}: 'text' must be a non-empty string")
            texts.append(r["text"])
            continue
        mapping = mapping or resolve_mapping("auto", r)
        prompt, completion = conversation(where, r, mapping)
        texts.append("\n\n".join(str(t.get("content", "")) for t in prompt + completion))
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return pack_rows([tokenizer(t, add_special_tokens=False)["input_ids"] + eos for t in texts], seq_len, num_sequences)


def sample_calibration_ids(teacher, tokenizer, num_sequences: int, seq_len: int, seed: int = 0, progress: bool = True,
                           batch: int = 64) -> torch.Tensor:
    """Calibration rows sampled from the teacher itself (no data needed), with m1's Engine.

    The teacher is run as an all-attention hybrid (an exact copy) so the Engine can serve
    it. Samples start from the BOS token (else EOS, else UNK, else token 0) at temperature 1, which
    draws from the teacher's own distribution over text.

    Why `batch` samples at once, and the stop at enough tokens: decoding on a CPU gains
    throughput with the batch (SmolLM2 on 2 cores: about 220 tokens/s at 16 rows, 460 at 64),
    so `batch` samples run together and all of them end as soon as `num_sequences * seq_len`
    tokens exist in total; `pack_rows` joins the samples end to end (a row may hold the end
    of one sample and the start of the next, as packed training text does). Twice the
    needed number of samples is queued so samples that end early at EOS are replaced.
    """
    from tqdm.auto import tqdm

    from m1.convert.mapping import convert_from_transformer
    from m1.engine import Engine, SamplingParams

    n_layers = teacher.config.num_hidden_layers
    copy = convert_from_transformer(teacher, list(range(n_layers))).eval()
    start = next((t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) if t is not None), 0)
    needed = num_sequences * seq_len
    n_samples = max(2 * num_sequences, batch)
    engine = Engine(copy, tokenizer=None, max_batch_size=min(batch, n_samples), max_model_len=seq_len + 1)
    bar = tqdm(total=needed, unit="tok", desc="sampling calibration text", disable=not progress)
    got = [0]

    def on_tokens(request_id: int, index: int, n_new: int) -> None:
        got[0] += n_new
        bar.update(min(n_new, max(0, needed - bar.n)))

    engine.token_hook = on_tokens
    engine.stop_hook = lambda request_id, index, n_tokens: got[0] >= needed
    params = SamplingParams(n=n_samples, temperature=1.0, max_tokens=seq_len, seed=seed)
    try:
        out = engine.generate([[start]], params, use_tqdm=False)[0]
    finally:
        bar.close()
    return pack_rows([[start] + list(o.token_ids) for o in out.outputs], seq_len, num_sequences)


def calibration_text(teacher, tokenizer, path, config, progress: bool = True) -> torch.Tensor:
    """Calibration rows from `path`, or sampled from the teacher when `path` is None (`config`: a `CalibrationConfig`)."""
    if path is not None:
        return calibration_ids_from_file(path, tokenizer, config.num_sequences, config.seq_len)
    log.info("no --calibration-data: sampling %d x %d tokens of calibration text from the teacher", config.num_sequences, config.seq_len)
    return sample_calibration_ids(teacher, tokenizer, config.num_sequences, config.seq_len, config.seed, progress)
