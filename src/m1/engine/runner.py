"""The engine's own forward over the model's modules, against the engine's cache.

It calls the model's live submodules (projections, norms, MLPs, rotary table), so a
model being trained is served on its current weights with no copy. Two passes:

- `prefill_many`: prompts packed end to end, unpadded, in chunks; attention writes its K/V into the
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
from m1.engine.packed import Piece, attention_groups, plan_pieces
from m1.engine.sampler import sample
from m1.layers.rope import apply_rotary
from m1.ops.fused import add_rms_norm, swiglu
from m1.ops.linear import LinearSet
from m1.ops.paged_attention import paged_decode
from m1.ops.workspace import Workspace

log = logging.getLogger(__name__)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

LOGIT_CHUNK_BYTES = 8 * 2**20  # CPU decode: fp32 logits per sampler chunk (see ModelRunner._sample)


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
        self._streams: list = []  # side streams of `decode_nano`, made on first use
        # CPU decode: reused buffers for the paged-attention gather and the logits, and the sampler
        # over row chunks whose (rows, vocab) fp32 temporaries stay small (see `_sample`); None on CUDA.
        self.workspace = Workspace() if dev.type == "cpu" else None
        self.logit_rows = max(8, LOGIT_CHUNK_BYTES // (4 * self.config.vocab_size)) if dev.type == "cpu" else None
        self.mlp_rows = 256 if dev.type == "cpu" else None  # prefill MLP row chunks (see `_prefill_mlp`)
        if self.logit_rows is not None:
            log.info("engine on %s: decode logits and paged-attention gathers in a reused workspace, sampling in chunks of "
                     "%d rows; prefill MLP in chunks of %d rows", dev, self.logit_rows, self.mlp_rows)
        # Every linear of the passes below goes through `linears`: on a CPU, oneDNN on weights prepared for it
        # (`m1.ops.linear`: about one more copy of the weights, GEMMs 2-3x faster than `F.linear` where measured);
        # elsewhere the live weights. q/k/v are one stacked weight per attention layer, one GEMM: a persistent
        # buffer (CUDA graphs bake in its address). `refresh_weights` refills what the live parameters changed.
        self.linears = LinearSet(dev, self.dtype, allow_copy=self._room_for_a_weight_copy(model))
        own: list = []
        for layer in model.model.layers:
            if layer.is_attention:
                a = layer.self_attn
                self._add(("qkv", a.layer_idx), [a.q_proj, a.k_proj, a.v_proj], own)
                self._add(a.o_proj, [a.o_proj], own)
            else:
                self._add(layer.mamba.in_proj, [layer.mamba.in_proj], own)
                self._add(layer.mamba.out_proj, [layer.mamba.out_proj], own)
            self._add(layer.shared_mlp.input_linear, [layer.shared_mlp.input_linear], own)
            self._add(layer.shared_mlp.output_linear, [layer.shared_mlp.output_linear], own)
        self._add(model.lm_head, [model.lm_head], own)
        log.info("engine linears: %s implementation%s", self.linears.impl_name,
                 f"; {len(own)} modules that are not plain nn.Linear run their own forward" if own else "")

    def _room_for_a_weight_copy(self, model) -> bool:
        """On a CPU, whether a prepared copy of the linears' weights (oneDNN's) fits in half the memory the
        system reports available (Linux's MemAvailable); elsewhere, or when unknown, True."""
        if self.device.type != "cpu":
            return True
        need = sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if type(m) is torch.nn.Linear)
        avail = available_memory_bytes()
        if avail is None or need <= avail // 2:
            return True
        log.info("engine linears: a prepared copy of the weights (%.2f GB) would take more than half the available "
                 "memory (%.2f GB): the weights are used as they are", need / 2**30, avail / 2**30)
        return False

    def _add(self, key, modules, own: list) -> None:
        if all(type(m) is torch.nn.Linear for m in modules):
            self.linears.add(key, modules)
        else:
            own.extend(modules)

    def lin(self, module, x: torch.Tensor) -> torch.Tensor:
        """module(x) on the prepared weights (a module that `linears` does not hold runs its own forward)."""
        return self.linears(module, x) if module in self.linears else module(x)

    def _qkv(self, attn, x: torch.Tensor) -> torch.Tensor:
        """q, k and v side by side, one GEMM."""
        key = ("qkv", attn.layer_idx)
        if key in self.linears:
            return self.linears(key, x)
        return torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1)

    def _mlp(self, mlp, x: torch.Tensor) -> torch.Tensor:
        """The shared MLP (SwiGLU), its two GEMMs on the prepared weights."""
        return self.lin(mlp.output_linear, swiglu(self.lin(mlp.input_linear, x)))

    @torch.no_grad()
    def refresh_weights(self) -> None:
        """Prepare again the weights whose live parameters changed (stacked q/k/v in place: same addresses)."""
        n = self.linears.refresh()
        if n:
            log.debug("engine linears: %d prepared again from changed parameters", n)

    # ---- per-slot setup ------------------------------------------------------------------------
    def set_block_table(self, slot: int, blocks: list[int]) -> None:
        self.set_block_tables([slot], [blocks])

    def set_block_tables(self, slots: list[int], blocks: list[list[int]]) -> None:
        """Rewrite the block-table rows of `slots` (unused columns: the null block) in one copy."""
        if not slots:
            return
        rows = torch.zeros(len(slots), self.max_cols, dtype=torch.int32)
        for r, b in zip(rows, blocks):
            r[: len(b)] = torch.tensor(b, dtype=torch.int32)
        self.block_table.index_copy_(0, torch.tensor(slots, device=self.device), rows.to(self.device))

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
    def prefill_many(self, prompts: list[tuple[list[int], int, list[int]]], chunk: int, budget: int) -> torch.Tensor:
        """Prefill prompts (ids, slot, blocks) in packs of at most `budget` tokens (pieces of at most
        `chunk`); return each prompt's last-position logits (n, V) fp32, in the order given."""
        out: list[torch.Tensor | None] = [None] * len(prompts)
        where = {slot: i for i, (_, slot, _) in enumerate(prompts)}
        if len(where) != len(prompts):
            raise ValueError("prefill_many: two prompts share a slot")
        for pack in plan_pieces(prompts, chunk, budget):
            logits = self.prefill_pack(pack)
            for piece, row in zip([p for p in pack if p.last], logits):
                out[where[piece.slot]] = row
        return torch.stack(out)

    @torch.no_grad()
    def prefill_pack(self, pack: list[Piece]) -> torch.Tensor:
        """One forward over the pieces of `pack` laid end to end; returns (pieces with `last`, V) fp32 logits."""
        m = self.model.model
        dev = self.device
        lens = [len(p.ids) for p in pack]
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        positions = torch.cat([torch.arange(p.start, p.start + n) for p, n in zip(pack, lens)])
        ids = torch.tensor([t for p in pack for t in p.ids])
        slot_mapping = None
        if self.cache.k:
            maps = [torch.tensor(p.blocks, dtype=torch.long)[positions[a:b] // self.bs] * self.bs + positions[a:b] % self.bs
                    for p, a, b in zip(pack, cu[:-1], cu[1:])]
            slot_mapping = torch.cat(maps).to(dev)
        ctx = _PackCtx(pack, lens, cu, dev)
        ids, positions = ids.to(dev), positions.to(dev)
        hidden = m.embed_tokens(ids)[None]  # (1, T, D)
        rope = m.rotary_emb(positions[None], hidden.dtype)
        for layer in m.layers:
            h = layer.input_layernorm(hidden)
            if layer.is_attention:
                h = self._pack_attention(layer.self_attn, h, rope, slot_mapping, ctx)
            else:
                h = self._pack_mamba(layer.mamba, h, ctx)
            hidden = hidden + h
            hidden = hidden + self._prefill_mlp(layer.shared_mlp, layer.post_attention_layernorm(hidden))
        rows = torch.tensor([b - 1 for p, b in zip(pack, cu[1:]) if p.last], dtype=torch.long, device=dev)
        return self.lin(self.model.lm_head, m.norm(hidden[0, rows])).float()

    def _prefill_mlp(self, mlp, x):
        """The MLP of a pack; on CPU over row chunks of `mlp_rows` (row-wise: the same maths), so its
        (rows, 2 x intermediate) temporaries stay in cache instead of being mapped and page-faulted
        anew in every layer (measured on SmolLM2, 3072 packed tokens: silu and the product took
        30 ms each per layer on the whole pack)."""
        rows = self.mlp_rows
        flat = x.reshape(-1, x.shape[-1])
        if rows is None or flat.shape[0] <= rows:
            return self._mlp(mlp, x)
        out = torch.empty_like(flat)
        for a in range(0, flat.shape[0], rows):
            out[a:a + rows] = self._mlp(mlp, flat[a:a + rows])
        return out.view_as(x)

    def _pack_attention(self, attn, h, rope, slot_mapping, ctx: "_PackCtx"):
        T = h.shape[1]
        H, KVH, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        qkv = self._qkv(attn, h)
        nq, nkv = H * d, KVH * d
        q = qkv[..., :nq].view(1, T, H, d).transpose(1, 2)
        k = qkv[..., nq:nq + nkv].view(1, T, KVH, d).transpose(1, 2)
        v = qkv[..., nq + nkv:].view(1, T, KVH, d)
        cos, sin = rope
        q = apply_rotary(q, cos, sin)[0].transpose(0, 1)  # (T, H, d)
        k = apply_rotary(k, cos, sin)[0].transpose(0, 1)  # (T, KVH, d)
        v = v[0]
        kc, vc = self.cache.k[attn.layer_idx], self.cache.v[attn.layer_idx]
        flat = (-1, KVH, d)
        kc.view(flat).index_copy_(0, slot_mapping, k.to(kc.dtype))
        vc.view(flat).index_copy_(0, slot_mapping, v.to(vc.dtype))
        rep = H // KVH
        out = torch.empty_like(q)
        for n, lmax, src, dst in ctx.groups:  # fresh pieces: right-padded, causal
            def pad(t):
                buf = t.new_zeros(n * lmax, *t.shape[1:])
                buf[dst] = t[src]
                return buf.view(n, lmax, *t.shape[1:]).transpose(1, 2)  # (n, heads, lmax, d)

            qq, kk, vv = pad(q), pad(k), pad(v)
            if rep > 1:
                kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
            o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=lmax > 1, scale=attn.scaling)
            out[src] = o.transpose(1, 2).reshape(n * lmax, H, d)[dst]
        for i in ctx.continuing:  # later chunks of long prompts: attend over the blocks written so far
            p, a, b = ctx.pack[i], ctx.cu[i], ctx.cu[i + 1]
            L, total = b - a, p.start + b - a
            nb = -(-total // self.bs)
            bt = torch.tensor(p.blocks[:nb], device=h.device)
            kk = kc[bt].reshape(1, nb * self.bs, KVH, d)[:, :total].transpose(1, 2)
            vv = vc[bt].reshape(1, nb * self.bs, KVH, d)[:, :total].transpose(1, 2)
            if rep > 1:
                kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
            mask = torch.arange(total, device=h.device)[None, :] <= torch.arange(p.start, total, device=h.device)[:, None]
            o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], kk.to(q.dtype), vv.to(q.dtype), attn_mask=mask, scale=attn.scaling)
            out[a:b] = o[0].transpose(0, 1)
        return self.lin(attn.o_proj, out.reshape(1, T, H * d))

    def _pack_mamba(self, mx, h, ctx: "_PackCtx"):
        # The layer's own packed prefill over the slot pools.
        return mx.prefill_packed(h, self.cache.conv[mx.layer_idx], self.cache.ssm[mx.layer_idx], ctx.slots, ctx.cu, ctx.cu_dev,
                                 ctx.cont_mask if ctx.continuing else None, self._ssd_chunk(mx.chunk_size, max(ctx.lens)),
                                 linear=self.lin)

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

        `max_ctx` (a host bound on positions + 1) only lets the CPU paths read fewer blocks and
        positions; graphs and kernels ignore it.
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
        layers = list(m.layers)
        first = layers[0].input_layernorm
        h, residual = add_rms_norm(hidden, None, first.weight, first.variance_epsilon)
        for i, layer in enumerate(layers):
            if layer.is_attention:
                h = self._decode_attention(layer.self_attn, h, cos, sin, slot_mapping, bt, seq_lens, max_blocks, max_ctx)
            else:
                h = self._decode_mamba(layer.mamba, h, slot_ids)
            post = layer.post_attention_layernorm
            h, residual = add_rms_norm(h, residual, post.weight, post.variance_epsilon)
            mlp = layer.shared_mlp
            h = self._mlp(mlp, h)
            nxt = layers[i + 1].input_layernorm if i + 1 < len(layers) else m.norm
            h, residual = add_rms_norm(h, residual, nxt.weight, nxt.variance_epsilon)
        new_tok, logprobs = self._sample(h, slot_ids, pos + 1, truncate)
        self.tok.index_copy_(0, slot_ids, new_tok)
        self.pos.index_copy_(0, slot_ids, pos + 1)
        return new_tok, logprobs

    def decode_nano(self, slot_ids: torch.Tensor, truncate: bool, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`decode` with the rows split into `parts` nano-batches, each on its own CUDA stream.

        Why: at large batch a hybrid step is a compute-bound phase (the projections' and MLPs' GEMMs)
        followed by memory-bound ones (the KV read of paged attention, the Mamba state read and write),
        one after the other on one stream. Independent nano-batches on separate streams let one's GEMMs
        run while another's attention reads the cache (NanoFlow's intra-device overlap); each nano-batch
        reads the weights once more. Rows are independent, so the tokens are those of `decode` (on a CPU,
        or with `parts` <= 1, it is `decode`). Captured into one graph by `DecodeGraphs` (fork and join).
        """
        if parts <= 1 or self.device.type != "cuda" or slot_ids.numel() < 2 * parts:
            return self.decode(slot_ids, truncate)
        main = torch.cuda.current_stream(self.device)
        if len(self._streams) < parts - 1:
            self._streams = [torch.cuda.Stream(self.device) for _ in range(parts - 1)]
        outs = []
        for i, ids in enumerate(slot_ids.chunk(parts)):
            if i == 0:
                outs.append(self.decode(ids, truncate))
                continue
            s = self._streams[i - 1]
            s.wait_stream(main)
            with torch.cuda.stream(s):
                outs.append(self.decode(ids, truncate))
        for s in self._streams[: parts - 1]:
            main.wait_stream(s)
        tok, lp = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        if not torch.cuda.is_current_stream_capturing():  # eager: made on a side stream, read on main
            for o in outs[1:]:
                o[0].record_stream(main)
                o[1].record_stream(main)
        return tok, lp

    def _sample(self, h, slot_ids, counter, truncate):
        """LM head + sampler for every row. With `logit_rows` set (CPU) the logits land in a reused
        workspace buffer and the sampler runs over row chunks, so its full-vocabulary temporaries
        stay in cache and below the allocator's mmap threshold (the whole batch's would be mapped
        and page-faulted anew every step). The sampler is row-wise: the same tokens either way.
        With oneDNN linears the head's GEMM has no `out=`: its result is a fresh tensor, and the
        sampler still runs over row chunks."""
        b = h.shape[0]
        temp, top_p, top_k, key = self.temperature[slot_ids], self.top_p[slot_ids], self.top_k[slot_ids], self.key[slot_ids]
        head = self.model.lm_head
        if self.logit_rows is None:
            return sample(self.lin(head, h), temp, top_p, top_k, key, counter, truncate)  # the draw upcasts as it reads
        if self.linears.impl_name != "ref" or head not in self.linears:
            logits = self.lin(head, h)
        else:
            logits = self.workspace.get("logits", (b, head.out_features), h.dtype, h.device)
            if head.bias is None:  # what the Linear computes (mm / addmm), into the reused buffer
                torch.mm(h, head.weight.t(), out=logits)
            else:
                torch.addmm(head.bias, h, head.weight.t(), out=logits)
        logits = logits.float()
        rows = self.logit_rows
        if b <= rows:
            return sample(logits, temp, top_p, top_k, key, counter, truncate)
        tok = torch.empty(b, dtype=torch.long, device=h.device)
        lp = torch.empty(b, dtype=torch.float32, device=h.device)
        for a in range(0, b, rows):
            e = min(a + rows, b)
            tok[a:e], lp[a:e] = sample(logits[a:e], temp[a:e], top_p[a:e], top_k[a:e], key[a:e], counter[a:e], truncate)
        return tok, lp

    def _decode_attention(self, attn, h, cos, sin, slot_mapping, bt, seq_lens, max_blocks, max_len):
        b = h.shape[0]
        nq, nkv = attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim
        qkv = self._qkv(attn, h)  # one GEMM for q, k and v
        H, KVH, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        qk = apply_rotary(qkv[:, : nq + nkv].view(b, H + KVH, 1, d), cos, sin)[:, :, 0]  # q and k heads rotated at once
        q, k = qk[:, :H], qk[:, H:]
        v = qkv[:, nq + nkv :].view(b, KVH, d)
        kc, vc = self.cache.k[attn.layer_idx], self.cache.v[attn.layer_idx]
        flat = (-1, attn.num_kv_heads, attn.head_dim)
        kc.view(flat).index_copy_(0, slot_mapping, k.to(kc.dtype))
        vc.view(flat).index_copy_(0, slot_mapping, v.to(vc.dtype))
        out = paged_decode(q, kc, vc, bt, seq_lens, attn.scaling, max_blocks=max_blocks, workspace=self.workspace,
                           max_len=max_len)
        return self.lin(attn.o_proj, out.reshape(b, -1))

    def _decode_mamba(self, mx, h, slot_ids):
        # The layer's own decode step over the slot pools (fused op: Triton on CUDA, references elsewhere).
        return mx.step(h, self.cache.conv[mx.layer_idx], self.cache.ssm[mx.layer_idx], slot_ids, linear=self.lin)


class DecodeGraphs:
    """CUDA graphs of `ModelRunner.decode`, one per (batch bucket, truncate) pair, captured lazily.

    A graph bakes in the parameters' addresses: in-place updates (optimizer steps,
    `load_state_dict`) are seen; if any parameter is re-allocated the engine notices
    (`ModelRunner` parameter signature) and recaptures.
    """

    def __init__(self, runner: ModelRunner, buckets: list[int], nano_batches: int = 1, nano_min_rows: int = 256):
        self.runner = runner
        self.buckets = sorted(buckets)
        self.nano_batches = nano_batches
        self.nano_min_rows = nano_min_rows
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
        parts = self.nano_batches if b >= self.nano_min_rows else 1
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                r.decode_nano(ids, truncate, parts)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            tok, lp = r.decode_nano(ids, truncate, parts)
        self.pool = g.pool()
        r.tok.copy_(saved[0])
        r.pos.copy_(saved[1])
        log.info("captured decode graph: bucket %d, truncate=%s, %d nano-batch%s", b, truncate, parts, "es" if parts > 1 else "")
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


class _PackCtx:
    """Index tensors of one pack, built once and shared by every layer."""

    def __init__(self, pack: list[Piece], lens: list[int], cu: list[int], dev):
        self.pack, self.lens, self.cu = pack, lens, cu
        self.cu_dev = torch.tensor(cu, dtype=torch.int32, device=dev)
        self.slots = torch.tensor([p.slot for p in pack], device=dev)
        fresh = [p.start == 0 for p in pack]
        self.continuing = [i for i, f in enumerate(fresh) if not f]
        self.cont_mask = torch.tensor([not f for f in fresh], device=dev)
        self.groups = []  # (pieces, padded length, packed rows, padded rows)
        for g in attention_groups(lens, fresh):
            lmax = lens[g[0]]
            src = torch.cat([torch.arange(cu[i], cu[i + 1]) for i in g])
            dst = torch.cat([torch.arange(j * lmax, j * lmax + lens[i]) for j, i in enumerate(g)])
            self.groups.append((len(g), lmax, src.to(dev), dst.to(dev)))
