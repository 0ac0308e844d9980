"""`Engine`: continuous batching of sampled generation over a hybrid (or pure) model.

The loop: admit waiting samples into free slots (the admitted prompts prefilled together,
packed end to end with `cu_seqlens`, each prompt's state forked into its other samples),
give every running sample the KV blocks of the next window (on_demand: preempting the
newest samples by recompute when the pool runs out; see `m1.engine.scheduler`), then
decode every running slot for a window of a few steps without looking at the host, then
poll the window's tokens once, apply stop rules, free finished slots and refill them. On CUDA each decode
step is a replayed graph; on CPU the same step runs eagerly on reference ops.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from m1.engine.cache import EngineCache, check_budget_fits, kv_bytes_per_token, plan_cache, state_bytes_per_slot
from m1.engine.params import CompletionOutput, RequestOutput, SamplingParams, StreamDelta
from m1.engine.runner import DecodeGraphs, ModelRunner
from m1.engine.sampler import sample, sample_key
from m1.engine.scheduler import KV_POLICIES, Admission, Request, Running, Scheduler

log = logging.getLogger(__name__)

Prompt = str | Sequence[int]


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple, set)) else {int(value)}


def end_token_ids(model, tokenizer=None) -> set[int]:
    """The tokens that end a completion (unless `ignore_eos`): the tokenizer's EOS and every EOS the
    model's generation config lists (its config's where the generation config lists none).

    Why the union, as vLLM does: a chat model's turn can end in more than one way (Llama 3's
    generation config lists <|end_of_text|>, <|eom_id|> and <|eot_id|>; its tokenizer names only
    <|eot_id|>), and a tokenizer with a wrong EOS (transformers < 5.24 read a GGUF file's BOS as its
    EOS) would otherwise let every completion run to `max_tokens`.
    """
    ids = _ids(getattr(tokenizer, "eos_token_id", None)) if tokenizer is not None else set()
    gen = getattr(model, "generation_config", None)
    ids |= _ids(getattr(gen, "eos_token_id", None) if gen is not None else None) or _ids(getattr(model.config, "eos_token_id", None))
    return ids


@dataclass
class EngineStats:
    """Counters over the engine's life (`Engine.stats`); `last_*` are for the latest generate/stream call."""

    preemptions: int = 0
    recomputed_tokens: int = 0  # tokens so far of preempted samples, prefilled again
    last_preemptions: int = 0
    # Work done, for rooflines: prompt tokens prefilled (recomputes included), decode steps,
    # rows decoded summed over steps, and positions attended summed over rows and steps.
    prefill_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_context: int = 0


class Engine:
    """Batched generation on a model's live weights.

    max_batch_size: decode slots (sequences decoded at once).
    max_model_len: longest prompt + completion a sample may reach.
    memory_budget_gb: bytes for the KV block pool and the slot states together (weights
        and activations not included). Default: on CUDA, 90% of free device memory less
        a workspace estimate; on CPU, just what max_batch_size x max_model_len can use, up to 4 GiB.
    block_size: tokens per KV block (a power of two >= 16). Default: 64 on CUDA; on CPU one block
        per sequence (max_model_len rounded up to 16) when the budget holds one for every slot, else 16.
    prefill_chunk: longest piece of one prompt prefilled at once (longer prompts continue in later packs).
    prefill_tokens: most prompt tokens packed into one prefill forward (bounds its activations).
    max_admit: most prompts admitted per packed-prefill round (bounds the first-token logits held).
    poll_interval: decode steps between host polls of finished flags.
    graph_buckets: extra batch sizes to capture decode graphs for (powers of two always are).
    kv_policy: "on_demand" (default) admits a sample by its prompt plus one poll window of KV
        blocks, grows it as it decodes and preempts the newest sample by recompute when the pool
        runs out; "reserve" reserves prompt + max_tokens at admission and never preempts
        (see `m1.engine.scheduler`). `stats.preemptions` counts preemptions; the log gets one
        summary line of them per `preemption_log_every_s` seconds (10) and one at the end of the call.

    nano_batches: decode graphs of at least 256 rows split the rows into this many nano-batches on
        separate CUDA streams, so one's GEMMs overlap another's KV and state reads (`ModelRunner.decode_nano`);
        1 (default) keeps one stream. Same tokens either way.

    `stop_hook`, when set, is called as stop_hook(request_id, sample_index, n_tokens) after each
    accepted token; True ends that sample with finish_reason "stop", as an EOS would. The
    scheduler never sees it (the reasoning benchmark uses it to end completions at drawn lengths).
    `token_hook(request_id, sample_index, n_new)`, when set, is called whenever a sample gains tokens.
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        max_batch_size: int = 256,
        max_model_len: int | None = None,
        memory_budget_gb: float | None = None,
        block_size: int | None = None,
        prefill_chunk: int = 2048,
        prefill_tokens: int = 8192,
        max_admit: int = 256,
        poll_interval: int = 8,
        use_cuda_graphs: bool | None = None,
        graph_buckets: Sequence[int] | None = None,
        kv_policy: str = "on_demand",
        nano_batches: int = 1,
    ):
        if kv_policy not in KV_POLICIES:
            raise ValueError(f"kv_policy: one of {', '.join(KV_POLICIES)}, got {kv_policy!r}")
        self.kv_policy = kv_policy
        self.stats = EngineStats()
        self.preemption_log_every_s = 10.0  # preemptions are logged as one summary line per this many seconds
        self.stop_hook: Callable[[int, int, int], bool] | None = None
        self.token_hook: Callable[[int, int, int], None] | None = None
        self.model = model
        self.tokenizer = tokenizer
        cfg = model.config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.max_model_len = int(max_model_len or min(cfg.max_position_embeddings, 32768))
        if block_size is not None and (block_size < 16 or block_size & (block_size - 1)):
            raise ValueError(f"block_size: must be a power of two >= 16, got {block_size}")
        self.prefill_chunk = prefill_chunk
        self.prefill_tokens = max(int(prefill_tokens), 1)
        self.max_admit = max(int(max_admit), 1)
        self.poll_interval = poll_interval
        budget = self._budget_bytes(memory_budget_gb, max_batch_size)
        self.block_size = int(block_size or self._default_block_size(max_batch_size, budget))
        self.layout = plan_cache(cfg, self.dtype, max_batch_size, self.max_model_len, budget, self.block_size)
        self.cache = EngineCache(cfg, self.layout, self.dtype, self.device)
        self.runner = ModelRunner(model, self.cache)
        self.has_kv = bool(cfg.attention_layers)
        self.use_cuda_graphs = self.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        if self.use_cuda_graphs and self.device.type != "cuda":
            raise ValueError("use_cuda_graphs: needs a CUDA model")
        buckets = {min(2**i, max_batch_size) for i in range(max_batch_size.bit_length() + 1)} | {max_batch_size}
        buckets = sorted(buckets | {b for b in (graph_buckets or []) if b <= max_batch_size})
        if int(nano_batches) < 1:
            raise ValueError(f"nano_batches: must be >= 1, got {nano_batches}")
        self.graphs = DecodeGraphs(self.runner, buckets, nano_batches=int(nano_batches)) if self.use_cuda_graphs else None
        self._param_sig: tuple[int, ...] | None = None
        self.eos_ids = end_token_ids(model, tokenizer)
        log.info("engine: %s, %s, decode %s, %d layers (%d attention), ends at tokens %s", self.device, self.dtype,
                 "CUDA graphs" if self.graphs else "eager", cfg.num_hidden_layers, len(cfg.attention_layers), sorted(self.eos_ids))

    def _default_block_size(self, max_batch_size: int, budget: int) -> int:
        """64 on CUDA. On CPU, one block per sequence (max_model_len rounded up to 16) when every slot's
        block fits the budget: a sequence never grows or is preempted, and with every slot busy the decode
        step attends on a view of the pool with no gather (`m1.ops.paged_attention`); 16 otherwise."""
        if self.device.type == "cuda":
            return 64
        cfg = self.model.config
        whole = -(-self.max_model_len // 16) * 16
        need = (max_batch_size + 1) * (whole * kv_bytes_per_token(cfg, self.dtype) + state_bytes_per_slot(cfg, self.dtype))
        if cfg.attention_layers and need <= budget:
            log.info("engine: CPU KV layout, one block of %d tokens per sequence", whole)
            return whole
        return 16

    def _budget_bytes(self, gb: float | None, max_batch_size: int) -> int:
        if gb is not None:
            check_budget_fits(int(gb * 2**30), self.device)
            return int(gb * 2**30)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            vocab = self.model.config.vocab_size
            workspace = 8 * max_batch_size * vocab * 4 + 2 * 2**30  # sampler temporaries + activations
            return max(int(0.9 * free) - workspace, 2**20)
        return 4 * 2**30

    # ---- public API --------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in prompt order."""
        reqs = self._make_requests(prompts, params)
        for _ in self._loop(reqs, use_tqdm=use_tqdm, stream=False):
            pass
        return [self._output(r) for r in reqs]

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamDelta]:
        """Yield what each sample of one prompt gained at every poll; concatenated, they equal `generate`."""
        reqs = self._make_requests([prompt] if _is_single(prompt) else prompt, params)
        if len(reqs) != 1:
            raise ValueError("stream: takes one prompt")
        for _, delta in self._loop(reqs, use_tqdm=False, stream=True):
            yield delta

    # ---- the steps alone, outside `generate` (what `m1 bench` times) --------------------------------
    def capture_graphs(self) -> None:
        """Refresh the decode weights and capture the decode graph of every batch bucket now (CUDA;
        on CPU only the refresh), so no capture falls inside a timed run. Runs on the scratch slot."""
        self._check_graphs()
        if self.graphs is None:
            return
        r = self.runner
        for b in self.graphs.buckets:
            self.graphs.run(torch.full((b,), r.scratch_slot, dtype=torch.long, device=self.device), False)
        r.reset_scratch()

    @torch.no_grad()
    def fill_random(self, seed: int = 1, temperature: float = 0.7) -> None:
        """Random data in every KV block and slot state, and in every slot a random next token and key,
        sampling at `temperature`: decode steps over it cost what real ones do (zeros can run faster)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        for t in list(self.cache.k.values()) + list(self.cache.v.values()) + list(self.cache.conv.values()):
            t.normal_(generator=g)
        for t in self.cache.ssm.values():
            t.normal_(std=0.1, generator=g)
        r = self.runner
        r.temperature.fill_(temperature)
        r.top_p.fill_(1.0)
        r.top_k.zero_()
        r.key.copy_(torch.randint(0, 2**31, r.key.shape, device=self.device, generator=g))
        r.tok.copy_(torch.randint(0, self.model.config.vocab_size, r.tok.shape, device=self.device, generator=g))

    def place_rows(self, batch: int, position: int, blocks_per_row: int) -> torch.Tensor:
        """Slots 0..batch-1 decode next at `position`, each over `blocks_per_row` KV blocks of its own
        (all distinct, so every read comes from memory); returns their slot ids for `decode_step`."""
        r = self.runner
        if self.has_kv:
            self._check_own_blocks(batch, blocks_per_row)
            blocks = torch.arange(1, 1 + batch * blocks_per_row, dtype=torch.int32, device=self.device).view(batch, blocks_per_row)
            r.block_table[:batch].zero_()
            r.block_table[:batch, :blocks_per_row] = blocks
        r.pos[:batch] = position
        return torch.arange(batch, device=self.device)

    def _check_own_blocks(self, rows: int, per_row: int) -> None:
        """`place_rows` and `prefill` give each row blocks of its own: they must exist (the CPU default of one
        block per sequence has just one a slot) and fit a block-table row."""
        lay = self.layout
        if rows * per_row > lay.usable_blocks or per_row > lay.max_blocks_per_seq:
            raise ValueError(f"{rows} rows x {per_row} KV blocks of {lay.block_size} tokens: the pool has {lay.usable_blocks} "
                             f"blocks, at most {lay.max_blocks_per_seq} a row")

    def decode_step(self, slot_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step of these slots as `generate` runs it (a graph replay on CUDA), with no
        scheduler or host poll: (tokens, logprobs) per row. Positions advance by one."""
        if self.graphs is not None:
            return self.graphs.run(slot_ids, False)
        return self.runner.decode(slot_ids, False)

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Prefill token-id prompts into slots 0..n-1, each over KV blocks of its own, packed as
        `generate` admits them; returns their last-position logits (n, V). Nothing is sampled."""
        nb = -(-max(map(len, prompts)) // self.block_size)
        if self.has_kv:
            self._check_own_blocks(len(prompts), nb)
        items = [(list(ids), i, list(range(1 + i * nb, 1 + (i + 1) * nb)) if self.has_kv else []) for i, ids in enumerate(prompts)]
        return self.runner.prefill_many(items, self.prefill_chunk, self.prefill_tokens)

    # ---- requests ------------------------------------------------------------------------------
    def _make_requests(self, prompts, params) -> list[Request]:
        if _is_single(prompts):
            prompts = [prompts]
        params = params or SamplingParams()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"params: {len(plist)} given for {len(prompts)} prompts")
        reqs = []
        for i, (prompt, p) in enumerate(zip(prompts, plist)):
            if isinstance(prompt, str):
                if self.tokenizer is None:
                    raise ValueError("prompts: strings need a tokenizer; pass token ids or Engine(tokenizer=...)")
                ids, text = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"]), prompt
            else:
                ids, text = [int(t) for t in prompt], None
            seed = p.seed if p.seed is not None else random.SystemRandom().getrandbits(63)
            outs = [CompletionOutput(index=j) for j in range(p.n)]
            reqs.append(Request(i, text, ids, p, seed, outs, pending=deque(range(p.n))))
        return reqs

    def _output(self, r: Request) -> RequestOutput:
        return RequestOutput(request_id=r.request_id, prompt=r.prompt, prompt_token_ids=r.prompt_ids, outputs=r.outputs, error=r.error)

    # ---- the loop ---------------------------------------------------------------------------------
    def _loop(self, reqs: list[Request], use_tqdm: bool, stream: bool) -> Iterator[tuple[Request, StreamDelta]]:
        sched = Scheduler(self.layout, self.has_kv, self.kv_policy, margin=self.poll_interval,
                          log_every_s=self.preemption_log_every_s)
        for r in reqs:
            why = sched.never_fits(len(r.prompt_ids), r.params)
            if why is not None:
                r.error = why
                log.warning("request %d cannot run: %s", r.request_id, why)
                for o in r.outputs:
                    o.finish_reason, o.error = "error", why
                    if stream:
                        yield r, StreamDelta(o.index, [], "", [], "error", why)
                r.pending.clear()
            else:
                sched.waiting.append(r)
        self._check_graphs()
        running: list[Running] = []
        bar = tqdm(total=len(reqs), unit="req", desc="generate", disable=not use_tqdm)
        bar.update(sum(1 for r in reqs if r.error))
        done_tokens, t0 = 0, time.perf_counter()
        left = {r.request_id: len(r.pending) for r in reqs if not r.error}
        self.stats.last_preemptions = 0
        while sched.has_waiting or running:
            finished: list[Running] = []
            for run in self._admit_all(sched):
                (finished if run.out.finish_reason else running).append(run)
            preempted: list[Running] = []
            if running:
                steps = max(1, min(self.poll_interval, min(r.remaining for r in running)))
                running, preempted, grown = sched.grow(running, steps)
                for run in preempted:
                    self.stats.preemptions += 1
                    self.stats.last_preemptions += 1
                    self.stats.recomputed_tokens += len(run.out.token_ids)
                if preempted:
                    sched.log_preemptions()
                self.runner.set_block_tables([r.slot for r in grown], [r.blocks for r in grown])
            if running:
                self._decode_window(running, stream, steps)
                still = []
                for run in running:
                    (finished if run.out.finish_reason else still).append(run)
                running = still
            elif not finished and not preempted and sched.has_waiting:
                raise RuntimeError("scheduler stalled with an empty engine: a request that fits alone was not admitted")
            for run in (running + finished) if stream else finished:
                if stream:
                    d = self._delta(run)
                    if d is not None:
                        yield run.req, d
            for run in finished:
                sched.release(run)
                done_tokens += len(run.out.token_ids)
                left[run.req.request_id] -= 1
                if left[run.req.request_id] == 0:
                    bar.update(1)
            bar.set_postfix(tok_s=f"{done_tokens / max(time.perf_counter() - t0, 1e-9):.0f}", running=len(running), refresh=False)
        bar.close()
        sched.log_preemptions(final=True)

    def _check_graphs(self) -> None:
        """Refresh the runner's stacked weights from the live parameters, and recapture graphs if
        any parameter was re-allocated since capture (live-weight serving)."""
        self.runner.refresh_weights()
        if self.graphs is None:
            return
        sig = tuple(p.data_ptr() for p in self.model.parameters())
        if self._param_sig is not None and sig != self._param_sig:
            log.info("model parameters moved since the decode graphs were captured: recapturing")
            self.graphs.clear()
        self._param_sig = sig

    def _admit_all(self, sched: Scheduler) -> list[Running]:
        """Admit everything that fits now; prefill the admitted prompts packed, at most
        `max_admit` prompts per round (bounds the first-token logits held at once)."""
        runs: list[Running] = []
        while True:
            adms = []
            while len(adms) < self.max_admit and (adm := sched.admit_next()) is not None:
                adms.append(adm)
            if not adms:
                return runs
            runs += self._admit(adms)

    def _admit(self, adms: list[Admission]) -> list[Running]:
        """One packed prefill for the admissions (each prompt into its first slot), fork each into
        its other slots, and sample every sample's next token. A re-admitted (preempted) sample
        prefills its prompt + tokens so far and draws its next token with the same key and
        position counter as its decode step would have: the stream is the same either way."""
        for a in adms:
            for s, o in zip(a.slots, a.own):
                self.runner.set_block_table(s, a.shared + o)
        logits = self.runner.prefill_many([(a.ids, a.slots[0], a.shared + a.own[0]) for a in adms],
                                          self.prefill_chunk, self.prefill_tokens)
        self.stats.prefill_tokens += sum(len(a.ids) for a in adms)
        rows, slots_all, keys, pos, temp, top_p, top_k, trunc = [], [], [], [], [], [], [], []
        for i, a in enumerate(adms):
            req, samples, slots, own = a.req, a.samples, a.slots, a.own
            P = len(a.ids)
            if len(slots) > 1:
                self.cache.fork_state(slots[0], slots[1:])
                if self.has_kv and P % self.block_size:
                    self.cache.copy_block(own[0][0], [o[0] for o in own[1:]], tokens=P % self.block_size)
            p = req.params
            for j, s in zip(samples, slots):
                rows.append(i)
                slots_all.append(s)
                keys.append(sample_key(req.seed, req.request_id, j))
                pos.append(P)
                temp.append(p.temperature)
                top_p.append(p.top_p)
                top_k.append(p.top_k)
                trunc.append(p.truncates)
        dev = self.device
        toks, lps = [0] * len(rows), [0.0] * len(rows)
        for flag in (False, True):  # each sample draws as it would alone: truncating rows on the sorted path only
            idx = [r for r in range(len(rows)) if trunc[r] == flag]
            if not idx:
                continue
            sel = lambda xs: [xs[r] for r in idx]  # noqa: E731
            tok, lp = sample(
                logits[torch.tensor(sel(rows), device=dev)], torch.tensor(sel(temp), dtype=torch.float32, device=dev),
                torch.tensor(sel(top_p), dtype=torch.float32, device=dev), torch.tensor(sel(top_k), dtype=torch.long, device=dev),
                torch.tensor(sel(keys), device=dev), torch.tensor(sel(pos), dtype=torch.long, device=dev), flag,
            )
            for r, t, l in zip(idx, tok.tolist(), lp.tolist()):
                toks[r], lps[r] = t, l
        self.runner.start_slots(slots_all, toks, pos, keys, temp, top_p, top_k)
        runs, r = [], 0
        for a in adms:
            for j, s, blocks in zip(a.samples, a.slots, a.own):
                run = a.resumed or Running(a.req, a.req.outputs[j], s, a.shared + blocks)
                run.slot, run.blocks = s, a.shared + blocks
                self._accept(run, [toks[r]], [lps[r]])
                runs.append(run)
                r += 1
        return runs

    def _decode_window(self, running: list[Running], stream: bool, steps: int) -> None:
        n = len(running)
        st = self.stats
        st.decode_steps += steps
        st.decode_rows += n * steps
        st.decode_context += steps * sum(r.context_len for r in running) + n * steps * (steps - 1) // 2
        slot_ids = torch.tensor([r.slot for r in running], device=self.device)
        truncate = any(r.req.params.truncates for r in running)
        max_ctx = max(len(r.req.prompt_ids) + len(r.out.token_ids) for r in running) + steps
        self.runner.reset_scratch()
        win_tok = torch.empty(n, steps, dtype=torch.long, device=self.device)
        win_lp = torch.empty(n, steps, dtype=torch.float32, device=self.device)
        for i in range(steps):
            if self.graphs is not None:
                tok, lp = self.graphs.run(slot_ids, truncate)
            else:
                tok, lp = self.runner.decode(slot_ids, truncate, max_ctx=max_ctx)
            win_tok[:, i] = tok
            win_lp[:, i] = lp
        toks, lps = win_tok.tolist(), win_lp.tolist()  # the one host sync of the window
        for run, t, l in zip(running, toks, lps):
            self._accept(run, t, l, need_text=stream)

    # ---- stop rules and text ------------------------------------------------------------------------
    def _accept(self, run: Running, toks: list[int], lps: list[float], need_text: bool = False) -> None:
        out, p = run.out, run.req.params
        start = len(out.token_ids)
        hook = self.stop_hook
        for t, l in zip(toks, lps):
            out.token_ids.append(t)
            out.logprobs.append(l)
            if (not p.ignore_eos and t in self.eos_ids) or t in p.stop_token_ids:
                out.finish_reason = "stop"
                break
            if hook is not None and hook(run.req.request_id, out.index, len(out.token_ids)):
                out.finish_reason = "stop"
                break
            if len(out.token_ids) >= p.max_tokens:
                out.finish_reason = "length"
                break
        if self.token_hook is not None:
            self.token_hook(run.req.request_id, out.index, len(out.token_ids) - start)
        if self.tokenizer is None:
            return
        if p.stop and self._cut_at_stop_string(run, start):
            return
        if need_text or out.finish_reason:
            out.text = self._decode(out.token_ids)

    def _cut_at_stop_string(self, run: Running, start: int) -> bool:
        out, stops = run.out, run.req.params.stop
        overlap = max(8, max(len(s) for s in stops))
        tail = self._decode(out.token_ids[max(0, start - overlap):])
        if not any(s in tail for s in stops):
            return False
        for n in range(max(1, start), len(out.token_ids) + 1):
            text = self._decode(out.token_ids[:n])
            hits = [i for i in (text.find(s) for s in stops) if i >= 0]
            if hits:
                del out.token_ids[n:], out.logprobs[n:]
                out.text, out.finish_reason = text[: min(hits)], "stop"
                return True
        return False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _delta(self, run: Running) -> StreamDelta | None:
        out, stops = run.out, run.req.params.stop
        text_end = len(out.text)
        if not out.finish_reason:
            hold = max((len(s) for s in stops), default=1) - 1
            text_end = max(run.streamed_text, len(out.text) - hold)
            while text_end > run.streamed_text and out.text[text_end - 1] == "\ufffd":
                text_end -= 1  # an incomplete UTF-8 sequence: wait for its remaining bytes
        toks = out.token_ids[run.streamed_tokens:]
        if not toks and text_end == run.streamed_text and not out.finish_reason:
            return None
        d = StreamDelta(out.index, toks, out.text[run.streamed_text:text_end], out.logprobs[run.streamed_tokens:],
                        out.finish_reason, out.error)
        run.streamed_tokens, run.streamed_text = len(out.token_ids), text_end
        return d


def _is_single(prompts) -> bool:
    return isinstance(prompts, str) or (isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], int)) or (
        isinstance(prompts, torch.Tensor) and prompts.dim() == 1
    )
