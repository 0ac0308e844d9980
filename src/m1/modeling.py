"""The hybrid Mamba-2/attention causal LM.

Every layer is a Llama decoder layer (RMSNorm, mixer, RMSNorm, SwiGLU MLP) whose mixer
is attention or Mamba-2, as `config.layer_types` says. Parameter names follow
transformers' GraniteMoeHybrid, so the files this class writes load in
`AutoModelForCausalLM` and vLLM, and this class loads theirs.

It is a `PreTrainedModel` with `GenerationMixin`: `generate()`, TRL and accelerate take
it as they take any causal LM. The generation cache is transformers' own hybrid
`DynamicCache` (KV for attention layers, conv + SSM state for Mamba layers).

Three input regimes, chosen by what is passed:
- plain: causal over each row;
- padded (`attention_mask` with zeros, left or right): pads are invisible to attention
  and never enter a Mamba state;
- packed (`position_ids` restarting at 0, or `cu_seqlens`, without an attention mask):
  each sequence sees only itself, and every Mamba state restarts at its boundary.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from m1.config import HybridConfig
from m1.layers.attention import Attention
from m1.layers.mamba2 import Mamba2Mixer
from m1.layers.mlp import GatedMLP
from m1.layers.norm import RMSNorm
from m1.layers.rope import RotaryEmbedding

log = logging.getLogger(__name__)

# transformers renamed the output's cache field (past_key_values -> cache) within 5.x.
_OUTPUT_CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's tensors do not match the model: lists what is missing and unexpected."""


class DecoderLayer(nn.Module):
    def __init__(self, config: HybridConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.shared_mlp = GatedMLP(config.hidden_size, config.shared_intermediate_size)
        if config.is_attention(layer_idx):
            self.self_attn = Attention(config, layer_idx)
        else:
            self.mamba = Mamba2Mixer(config, layer_idx)

    @property
    def is_attention(self) -> bool:
        return hasattr(self, "self_attn")

    def forward(self, hidden, *, rope, attn_mask, token_mask, cache, cu_seqlens):
        h = self.input_layernorm(hidden)
        if self.is_attention:
            h = self.self_attn(h, rope, attn_mask, cache)
        else:
            h = self.mamba(h, token_mask=token_mask, cache=cache, cu_seqlens=cu_seqlens)
        hidden = hidden + h
        return hidden + self.shared_mlp(self.post_attention_layernorm(hidden))


class HybridPreTrainedModel(PreTrainedModel):
    config_class = HybridConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DecoderLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, Mamba2Mixer):
            module.reset_parameters()
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, RotaryEmbedding):
            module.reset_parameters()


class HybridModel(HybridPreTrainedModel):
    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        cu_seqlens=None,
        past_key_values=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Final hidden states. Extra keywords that trainers pass (`use_cache`, ...) are accepted and unused."""
        cache = cache if cache is not None else past_key_values
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, l = hidden.shape[:2]
        past = _past_length(cache, self.config)

        token_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            token_mask = attention_mask[:, -l:]
        else:
            attention_mask = None  # an all-ones mask changes nothing: take the fast causal path

        given_positions = position_ids is not None
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -l:]
            else:
                position_ids = torch.arange(past, past + l, device=hidden.device).expand(b, l)

        seg = None
        if cu_seqlens is not None:
            if attention_mask is not None or cache is not None:
                raise ValueError("cu_seqlens (packed sequences) cannot be combined with attention_mask or a cache")
            seg = _segments_from_cu_seqlens(cu_seqlens, b * l, hidden.device).view(b, l)
        # only positions the caller gave can restart (packed rows); looking costs a host sync, so the
        # positions made above (which never restart) are not looked at
        elif given_positions and attention_mask is None and cache is None and l > 1 and bool((position_ids[:, 1:] == 0).any()):
            seg = _segments_from_positions(position_ids)
            cu_seqlens = _cu_seqlens_from_segments(seg)

        attn_mask = _attention_mask(attention_mask, seg, b, l, past, hidden.device)
        rope = self.rotary_emb(position_ids, hidden.dtype)
        for layer in self.layers:
            kwargs = dict(rope=rope, attn_mask=attn_mask, token_mask=token_mask, cache=cache, cu_seqlens=cu_seqlens)
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(lambda h, lay=layer, kw=kwargs: lay(h, **kw), hidden, use_reentrant=False)
            else:
                hidden = layer(hidden, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden))


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep: int = 0,
        cu_seqlens=None,
        chunked_loss=None,
        **kwargs,
    ):
        """Causal-LM forward.

        `chunked_loss(hidden, lm_head) -> Tensor`, when given, replaces the logits: the loss
        is computed from the final hidden states in pieces (see `m1.train.losses`), so
        (sequence x vocab) logits never sit in memory at once. Keeping the LM head's use
        inside this forward is what DDP and FSDP need (FSDP un-shards only inside forward).
        """
        cache = cache if cache is not None else past_key_values
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            cu_seqlens=cu_seqlens,
        ).last_hidden_state
        if chunked_loss is not None:
            return CausalLMOutputWithPast(loss=chunked_loss(hidden, self.lm_head))
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUTPUT_CACHE_FIELD: cache})

    # ---- checkpoints ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, *args, strict: bool = True, **kwargs):
        """Load through safetensors only; with `strict`, any missing or unexpected tensor is an error."""
        kwargs["use_safetensors"] = True
        kwargs["output_loading_info"] = True
        model, info = super().from_pretrained(path, *args, **kwargs)
        missing = sorted(info.get("missing_keys", []))
        unexpected = sorted(info.get("unexpected_keys", []))
        mismatched = sorted(str(m) for m in info.get("mismatched_keys", []))
        if strict and (missing or unexpected or mismatched):
            raise CheckpointMismatchError(
                f"checkpoint {path} does not match the model:\n"
                f"  missing tensors ({len(missing)}): {missing}\n"
                f"  unexpected tensors ({len(unexpected)}): {unexpected}\n"
                f"  shape mismatches ({len(mismatched)}): {mismatched}"
            )
        return model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Write config.json + safetensors in the GraniteMoeHybrid layout, atomically.

        Files go to a temporary sibling directory that replaces the target only when
        complete, so a crash mid-save never leaves a half-written checkpoint behind.
        """
        from m1.checkpoint import atomic_directory

        kwargs["safe_serialization"] = True
        with atomic_directory(Path(save_directory)) as tmp:
            super().save_pretrained(tmp, *args, **kwargs)


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (embeddings, layers, final norm) of the hybrid or of any transformers causal LM."""
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def _past_length(cache, config: HybridConfig) -> int:
    if cache is None or not config.attention_layers:
        return 0
    return cache.get_seq_length(config.attention_layers[0])


def _segments_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """Segment ids, unique across rows: a new segment starts at position 0 and at each row start."""
    b, l = position_ids.shape
    starts = position_ids == 0
    starts[:, 0] = True
    return starts.reshape(-1).long().cumsum(0).view(b, l) - 1


def _cu_seqlens_from_segments(seg: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(seg.reshape(-1))
    return F.pad(counts.cumsum(0), (1, 0)).to(torch.int32)


def _segments_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int, device) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long().to(device)
    if int(lengths.sum()) != total:
        raise ValueError(f"cu_seqlens covers {int(lengths.sum())} tokens but the batch has {total}")
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)


def _attention_mask(attention_mask, seg, b: int, l: int, past: int, device) -> torch.Tensor | None:
    """A boolean (b, 1, q, k) mask, or None for the plain causal case SDPA handles itself."""
    if attention_mask is None and seg is None and past == 0:
        return None
    k = past + l
    q_pos = torch.arange(past, k, device=device)[:, None]
    allowed = torch.arange(k, device=device)[None, :] <= q_pos  # (q, k) causal with offset
    allowed = allowed[None].expand(b, l, k)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :k].bool()
    if seg is not None:
        allowed = allowed & (seg[:, :, None] == seg[:, None, :])
    # A fully masked query row (a pad attending to nothing) would give NaN; let it see itself.
    diag = torch.zeros_like(allowed)
    diag[:, torch.arange(l), past + torch.arange(l)] = True
    allowed = allowed | (diag & ~allowed.any(-1, keepdim=True))
    return allowed[:, None]
