"""The engine's own forward over the model's modules, against the engine's cache.

It calls the model's live submodules (projections, norms, MLPs, rotary table), so a
model being trained is served on its current weights with no copy. Two passes:

- `prefill`: one prompt, unpadded, in chunks; attention writes its K/V into the
  prompt's blocks, Mamba layers leave their conv/SSM state in the prompt's slot.
- `decode`: one token for each row of a batch; row r is slot `slot_ids[r]`. Per-slot
  inputs (last token, position, key, sampling settings, block table) live in
  device tensors the step reads and advances itself, so the step needs no host
  input between polls and can be captured as a CUDA graph (`DecodeGraphs`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from m1.engine.cache import EngineCache
from m1.engine.paged_attention import paged_decode
from m1.engine.sampler import sample
from m1.layers.rope import apply_rotary
from m1.ops.decode import mamba2_decode_step

log = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, model, cache: EngineCache):
        self.model = model
        self.config = model.config
        self.cache = cache
        lay = cache.layout
        self.bs = lay.block_size
        self.max_cols = lay.max_blocks_per_seq + 1  # one spare column: always the null block
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        slots = lay.num_slots + 1
        dev = self.device
        # Per-slot decode inputs, advanced by the step itself.
        self.tok = torch.zeros(slots, dtype=torch.long, device=dev)
        self.pos = torch.zeros(slots, dtype=torch.long, device=dev)
        self.key = torch.zeros(slots, dtype=torch.long, device=dev)
        self.temperature = torch.zeros(slots, dtype=torch.float32, device=dev)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=dev)
        self.top_k = torch.zeros(slots, dtype=torch.long, device=dev)
        self.block_table = torch.zeros(slots, self.max_cols, dtype=torch.int32, device=dev)
        self.scratch_slot = lay.num_slots

    # ---- per-slot setup ------------------------------------------------------------------------
    def set_block_table(self, slot: int, blocks: list[int]) -> None:
        row = torch.zeros(self.max_cols, dtype=torch.int32)
        row[: len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        self.block_table[slot].copy_(row.to(self.device))

    def start_slots(self, slots: list[int], tokens: list[int], positions: list[int], keys: list[int],
                    temperature: list[float], top_p: list[float], top_k: list[int]) -> None:
        """Arm slots for decode: the token to feed next, its position, and the sample's settings."""
        idx = torch.tensor(slots, device=self.device)
        for buf, vals in ((self.tok, tokens), (self.pos, positions), (self.key, keys), (self.temperature, temperature),
                          (self.top_p, top_p), (self.top_k, top_k)):
            buf.index_copy_(0, idx, torch.tensor(vals, dtype=buf.dtype).to(self.device))

    def reset_scratch(self) -> None:
        self.pos[self.scratch_slot] = 0

    # ---- prefill ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, ids: list[int], slot: int, blocks: list[int], chunk: int) -> torch.Tensor:
        """Run one prompt into `slot` and `blocks`; return the last position's logits (V,) fp32."""
        m = self.model.model
        hidden_last = None
        for start in range(0, len(ids), chunk):
            piece = torch.tensor(ids[start : start + chunk], device=self.device)
            L = piece.numel()
            positions = torch.arange(start, start + L, device=self.device)
            slot_mapping = None
            if blocks:
                blk = torch.tensor(blocks, device=self.device)[positions // self.bs]
                slot_mapping = blk * self.bs + positions % self.bs
            hidden = m.embed_tokens(piece)[None]
            rope = m.rotary_emb(positions[None], hidden.dtype)
            for layer in m.layers:
                h = layer.input_layernorm(hidden)
                if layer.is_attention:
                    h = self._prefill_attention(layer.self_attn, h, rope, slot_mapping, blocks, start)
                else:
                    h = self._prefill_mamba(layer.mamba, h, slot, first=start == 0)
                hidden = hidden + h
                hidden = hidden + layer.shared_mlp(layer.post_attention_layernorm(hidden))
            hidden_last = hidden[:, -1]
        return self.model.lm_head(m.norm(hidden_last))[0].float()

    def _prefill_attention(self, attn, h, rope, slot_mapping, blocks, start):
        b, L, _ = h.shape
        q = attn.q_proj(h).view(b, L, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, L, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, L, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        kc, vc = self.cache.k[attn.layer_idx], self.cache.v[attn.layer_idx]
        flat = (-1, attn.num_kv_heads, attn.head_dim)
        kc.view(flat).index_copy_(0, slot_mapping, k[0].transpose(0, 1).to(kc.dtype))
        vc.view(flat).index_copy_(0, slot_mapping, v[0].transpose(0, 1).to(vc.dtype))
        mask = None
        if start > 0:  # later chunks of a long prompt: attend to the earlier chunks, gathered from the blocks
            total = start + L
            nb = -(-total // self.bs)
            bt = torch.tensor(blocks[:nb], device=h.device)
            k = kc[bt].reshape(1, nb * self.bs, *flat[1:])[:, :total].transpose(1, 2)
            v = vc[bt].reshape(1, nb * self.bs, *flat[1:])[:, :total].transpose(1, 2)
            mask = torch.arange(total, device=h.device)[None, :] <= torch.arange(start, total, device=h.device)[:, None]
        rep = attn.num_heads // attn.num_kv_heads
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=L > 1, scale=attn.scaling)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
        return attn.o_proj(out.transpose(1, 2).reshape(b, L, -1))

    def _prefill_mamba(self, mx, h, slot: int, first: bool):
        from m1.ops import causal_conv1d, ssd_chunked

        b, L, _ = h.shape
        conv_pool, ssm_pool = self.cache.conv[mx.layer_idx], self.cache.ssm[mx.layer_idx]
        z, xBC, dt_raw = mx._split(mx.in_proj(h))
        conv_w = mx.conv1d.weight.squeeze(1)
        prev_conv = None if first else conv_pool[slot : slot + 1]
        prev_ssm = None if first else ssm_pool[slot : slot + 1]
        xBC_act, conv_final = causal_conv1d(xBC, conv_w, mx.conv1d.bias, initial_state=prev_conv)
        x, B, C = mx._split_xbc(xBC_act)
        y, ssm_final = ssd_chunked(
            x.reshape(b, L, mx.num_heads, mx.head_dim), mx._dt(dt_raw), -torch.exp(mx.A_log.float()),
            B.reshape(b, L, mx.n_groups, mx.state_size), C.reshape(b, L, mx.n_groups, mx.state_size),
            mx.D, initial_state=prev_ssm, chunk_size=self._ssd_chunk(mx.chunk_size, L),
        )
        conv_pool[slot].copy_(conv_final[0])
        ssm_pool[slot].copy_(ssm_final[0])
        y = mx.norm(y.reshape(b, L, mx.inner), z)
        return mx.out_proj(y.to(h.dtype))

    def _ssd_chunk(self, chunk: int, L: int) -> int:
        """On CPU a short piece need not be padded to the model's chunk (same maths, less work);
        GPU kernels keep the model's chunk size."""
        if self.device.type == "cuda":
            return chunk
        return min(chunk, max(8, 1 << (L - 1).bit_length()))

    # ---- decode ----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, slot_ids: torch.Tensor, truncate: bool, max_ctx: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token for each row; advances tok/pos of those slots. Returns (tokens, logprobs) per row.

        `max_ctx` (a host bound on positions + 1) only lets the CPU reference gather fewer
        blocks; graphs and kernels ignore it.
        """
        m = self.model.model
        tok, pos = self.tok[slot_ids], self.pos[slot_ids]
        bt = self.block_table[slot_ids]
        col = torch.clamp(pos // self.bs, max=self.max_cols - 1)
        slot_mapping = bt.gather(1, col[:, None]).squeeze(1).long() * self.bs + pos % self.bs
        seq_lens = (pos + 1).to(torch.int32)
        max_blocks = None if max_ctx is None else -(-max_ctx // self.bs)
        hidden = m.embed_tokens(tok)  # (b, D)
        cos, sin = m.rotary_emb(pos[:, None], hidden.dtype)  # (b, 1, d)
        for layer in m.layers:
            h = layer.input_layernorm(hidden)
            if layer.is_attention:
                h = self._decode_attention(layer.self_attn, h, cos, sin, slot_mapping, bt, seq_lens, max_blocks)
            else:
                h = self._decode_mamba(layer.mamba, h, slot_ids)
            hidden = hidden + h
            hidden = hidden + layer.shared_mlp(layer.post_attention_layernorm(hidden))
        logits = self.model.lm_head(m.norm(hidden)).float()
        new_tok, logprobs = sample(
            logits, self.temperature[slot_ids], self.top_p[slot_ids], self.top_k[slot_ids], self.key[slot_ids], pos + 1, truncate
        )
        self.tok.index_copy_(0, slot_ids, new_tok)
        self.pos.index_copy_(0, slot_ids, pos + 1)
        return new_tok, logprobs

    def _decode_attention(self, attn, h, cos, sin, slot_mapping, bt, seq_lens, max_blocks):
        b = h.shape[0]
        q = attn.q_proj(h).view(b, attn.num_heads, 1, attn.head_dim)
        k = attn.k_proj(h).view(b, attn.num_kv_heads, 1, attn.head_dim)
        v = attn.v_proj(h).view(b, attn.num_kv_heads, attn.head_dim)
        q, k = apply_rotary(q, cos, sin)[:, :, 0], apply_rotary(k, cos, sin)[:, :, 0]
        kc, vc = self.cache.k[attn.layer_idx], self.cache.v[attn.layer_idx]
        flat = (-1, attn.num_kv_heads, attn.head_dim)
        kc.view(flat).index_copy_(0, slot_mapping, k.to(kc.dtype))
        vc.view(flat).index_copy_(0, slot_mapping, v.to(vc.dtype))
        out = paged_decode(q, kc, vc, bt, seq_lens, attn.scaling, max_blocks=max_blocks)
        return attn.o_proj(out.reshape(b, -1))

    def _decode_mamba(self, mx, h, slot_ids):
        # The fused op (m1.ops.decode): Triton on CUDA, composed references elsewhere; it logs its choice.
        y = mamba2_decode_step(
            mx.in_proj(h), self.cache.conv[mx.layer_idx], self.cache.ssm[mx.layer_idx], slot_ids,
            mx.conv1d.weight.squeeze(1), mx.conv1d.bias, mx.dt_bias, -torch.exp(mx.A_log.float()), mx.D, mx.norm.weight,
            n_heads=mx.num_heads, head_dim=mx.head_dim, n_groups=mx.n_groups, state_size=mx.state_size,
            eps=mx.norm.variance_epsilon, dt_limit=mx.dt_limit,
        )
        return mx.out_proj(y.to(h.dtype))


class DecodeGraphs:
    """CUDA graphs of `ModelRunner.decode`, one per (batch bucket, truncate) pair, captured lazily.

    A graph bakes in the parameters' addresses: in-place updates (optimizer steps,
    `load_state_dict`) are seen; if any parameter is re-allocated the engine notices
    (`ModelRunner` parameter signature) and recaptures.
    """

    def __init__(self, runner: ModelRunner, buckets: list[int]):
        self.runner = runner
        self.buckets = sorted(buckets)
        self.graphs: dict[tuple[int, bool], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.pool = None

    def bucket(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        raise ValueError(f"{n} rows exceed the largest bucket {self.buckets[-1]}")

    def clear(self) -> None:
        """Drop every graph and its memory pool; the next capture starts a fresh pool
        (re-capturing into a pool whose graphs were freed trips the caching allocator)."""
        self.graphs.clear()
        self.pool = None
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    def _capture(self, b: int, truncate: bool):
        r = self.runner
        ids = torch.full((b,), r.scratch_slot, dtype=torch.long, device=r.device)
        # Warm-up on a side stream (allocator and Triton autotune/compile happen outside capture).
        saved = (r.tok.clone(), r.pos.clone())
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                r.decode(ids, truncate)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            tok, lp = r.decode(ids, truncate)
        self.pool = g.pool()
        r.tok.copy_(saved[0])
        r.pos.copy_(saved[1])
        log.info("captured decode graph: bucket %d, truncate=%s", b, truncate)
        return g, ids, tok, lp

    def run(self, slot_ids: torch.Tensor, truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = slot_ids.numel()
        b = self.bucket(n)
        key = (b, truncate)
        if key not in self.graphs:
            self.graphs[key] = self._capture(b, truncate)
        g, ids, tok, lp = self.graphs[key]
        ids[:n].copy_(slot_ids)
        ids[n:].fill_(self.runner.scratch_slot)
        g.replay()
        return tok[:n], lp[:n]
