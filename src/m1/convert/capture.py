"""What the teacher's attention layers see and produce, captured by forward hooks.

`record_attention_io` is the hook itself (the align stage's loss, `m1.train.align`, reads
its per-layer targets from it); `capture_attention_io` runs the teacher over calibration
rows and keeps every layer's input, output and mean attention distance for
`m1.convert.calibrate`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from m1.layers.rope import apply_rotary
from m1.modeling import decoder_of


@torch.no_grad()
def attention_distance(attn, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per query head: the attention-weighted mean of (t - s) over real query positions t.

    `attn` is a Llama/Qwen2 attention module, `hidden` its (normalised) input (b, l, d) and
    cos/sin its rotary embeddings (b, l, head_dim). Returns (heads,) sums and the count, as
    a tensor (heads + 1,) so batches can be added up.
    """
    b, l, _ = hidden.shape
    nq, nkv = attn.config.num_attention_heads, attn.config.num_key_value_heads
    hd = attn.head_dim
    q = attn.q_proj(hidden).view(b, l, nq, hd).transpose(1, 2)
    k = attn.k_proj(hidden).view(b, l, nkv, hd).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    k = k.repeat_interleave(nq // nkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * attn.scaling
    pos = torch.arange(l, device=hidden.device)
    allowed = pos[None, :] <= pos[:, None]
    if mask is not None:
        allowed = allowed[None] & mask[:, None, :].bool()  # (b, l, l)
        allowed = allowed[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    p = scores.float().softmax(-1)
    dist = (pos[:, None] - pos[None, :]).clamp(min=0).float()
    mean_d = (p * dist).sum(-1)  # (b, h, l)
    real = torch.ones(b, l, device=hidden.device) if mask is None else mask.float()
    sums = (mean_d * real[:, None]).sum((0, 2))
    return torch.cat([sums, real.sum().reshape(1)])


@contextmanager
def record_attention_io(teacher, layers: list[int], on_call=None):
    """While active, each forward of `teacher` records {layer: (input, output)} of the listed attention layers.

    The input is what the attention module received (the hidden state after the layer's
    input norm), the output what it returned (after o_proj): exactly the per-layer
    targets of teacher-forced alignment. `on_call(layer, module, input, kwargs)` runs too,
    if given. Yields the dict, refilled on every forward.
    """
    decoder = decoder_of(teacher)
    got: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_hook(i):
        def hook(module, args, kwargs, output):
            h = kwargs.get("hidden_states", args[0] if args else None)
            got[i] = (h, output[0] if isinstance(output, tuple) else output)
            if on_call is not None:
                on_call(i, module, h, kwargs)

        return hook

    handles = [decoder.layers[i].self_attn.register_forward_hook(make_hook(i), with_kwargs=True) for i in layers]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_attention_io(teacher, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layers: list[int], batch: int = 4,
                         distance_rows: int | None = None, progress: bool = False):
    """The teacher's attention input and output at each of `layers`, over all rows, on the teacher's device.

    Returns {layer: (inputs (n, l, d), outputs (n, l, d), mean attention distance per query head)}.
    The distance needs every layer's full score matrix again, which on a CPU costs about twice
    the teacher's forward itself; `distance_rows` measures it on the batches that hold the first
    that many rows only (None: all rows). `progress` shows a bar over the rows.
    """
    from tqdm.auto import tqdm

    decoder = decoder_of(teacher)
    xs: dict[int, list] = {i: [] for i in layers}
    ys: dict[int, list] = {i: [] for i in layers}
    dist: dict[int, torch.Tensor] = {}
    current_mask: list = [None]
    measure = [True]  # whether this batch's distances are measured

    def on_call(i, module, h, kwargs):
        if not measure[0]:
            return
        cos, sin = kwargs["position_embeddings"]
        d = attention_distance(module, h, cos, sin, current_mask[0])
        dist[i] = d if i not in dist else dist[i] + d

    bar = tqdm(total=input_ids.shape[0], unit="row", desc="teacher activations", disable=not progress)
    with record_attention_io(teacher, layers, on_call) as got, bar:
        for s in range(0, input_ids.shape[0], batch):
            measure[0] = distance_rows is None or s < distance_rows
            current_mask[0] = None if attention_mask is None else attention_mask[s : s + batch]
            decoder(input_ids=input_ids[s : s + batch], attention_mask=current_mask[0])
            for i in layers:
                xs[i].append(got[i][0].float())
                ys[i].append(got[i][1].float())
            bar.update(min(batch, input_ids.shape[0] - s))
    return {i: (torch.cat(xs[i]), torch.cat(ys[i]), (dist[i][:-1] / dist[i][-1]).tolist()) for i in layers}

