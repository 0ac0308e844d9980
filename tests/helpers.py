"""The tests' one factory of tiny models, and what goes with them (a character tokenizer, a toy benchmark)."""

import gzip
import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def tiny_llama(layers: int = 4, tied: bool = True, seed: int = 0, vocab: int = 97, hidden: int = 64, intermediate: int = 96,
               heads: int = 4, kv_heads: int = 2, max_positions: int = 256, rope: dict | None = LLAMA3_ROPE,
               **config) -> LlamaForCausalLM:
    """A random GQA Llama (Llama-3 rope scaling unless `rope` is None: then the config's default rope);
    `config` sets further `LlamaConfig` fields."""
    torch.manual_seed(seed)
    fields = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                  tie_word_embeddings=tied, **config)
    if rope is not None:
        fields["rope_parameters"] = dict(rope)
    return LlamaForCausalLM(LlamaConfig(**fields)).eval()


def tiny_qwen2(layers: int = 3, seed: int = 0, vocab: int = 97) -> Qwen2ForCausalLM:
    """A random Qwen2 whose q/k/v biases are non-zero (so conversion must carry them)."""
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.normal_()
    return model


CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?+-*/=^_(){}[]$\\'\n"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of `CHARS`, with <pad>, <eos> and <unk>."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {c: i + 3 for i, c in enumerate(CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (width 32, default rope) with `tiny_tokenizer`, saved as a checkpoint directory."""
    tok = tiny_tokenizer()
    model = tiny_llama(layers=2, tied=False, seed=seed, vocab=len(tok), hidden=32, intermediate=64, heads=2, kv_heads=1,
                       max_positions=512, rope=None, eos_token_id=1, pad_token_id=0, bos_token_id=None)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_problems(path: Path, n: int = 3) -> Path:
    """A toy benchmark: "What is i+1?" for i < n."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n")
    return path


def write_calibration_text(path: Path, rows: int = 40) -> Path:
    """A gzip JSONL of number sequences that `tiny_tokenizer` encodes: calibration text for `m1 convert` tests."""
    with gzip.open(path, "wt") as f:
        for i in range(rows):
            f.write(json.dumps({"text": " ".join(str((i * 7 + j) % 50) for j in range(30))}) + "\n")
    return path


def convert_with_auto_placement(tmp_path: Path, device: str, seconds: float) -> Path:
    """`m1 convert --attention-layers auto:1` on `save_tiny_model`'s teacher, calibrated on `write_calibration_text`;
    the output folder. The caller sets `m1.convert.placement.MIN_TOKENS_PER_CANDIDATE` (0: tiny text)."""
    from m1.cli import main as m1_main

    teacher = save_tiny_model(tmp_path / "teacher")
    calib = write_calibration_text(tmp_path / "calib.jsonl.gz")
    out = tmp_path / "hybrid"
    rc = m1_main(["convert", str(teacher), str(out), "--attention-layers", "auto:1", "--device", device, "--calibration-data", str(calib),
                  "--calibration-sequences", "4", "--calibration-length", "32", "--calibration-seconds", str(seconds)])
    assert rc == 0
    return out
