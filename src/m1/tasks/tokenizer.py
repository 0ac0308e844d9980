"""A small BPE tokenizer for the task, saved as a ``PreTrainedTokenizerFast`` with a chat template.

Digits are always single tokens so that a tiny model sees numbers place by place, which is
what makes the arithmetic learnable. Step labels ("B: ") are isolated so they are the same
token in the question and in the solution, which the solution's copy of each operation
relies on. Everything else between digits is one byte-level chunk, so BPE can merge the
recurring words ("multiply by ") and keep the sequences short. The chat template marks the assistant turn with ``{% generation %}`` so
that TRL's assistant-only loss works on it.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]

# Non-assistant turns close with <|end|>; the assistant turn closes with eos, which is what
# generation stops on. The generation block is the span trained on under assistant-only loss.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train BPE on ``texts`` (the task's prompts and solutions) and wrap it for transformers."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("[A-Z]: "), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # Every printable ASCII character is in the base alphabet, so any ASCII prompt encodes.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    base = sorted({c for piece, _ in byte_level.pre_tokenize_str(string.printable) for c in piece})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=base,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    log.info("trained tokenizer: %d tokens", tok.get_vocab_size())
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=1024,
    )
