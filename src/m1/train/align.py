"""The align stage's loss: teacher-forced, per-layer alignment of the Mamba mixers.

Kept apart from `m1.train.distill` (which builds on TRL) so that scripts can use it with
torch and transformers alone.
"""

from __future__ import annotations

import torch

from m1.convert.capture import record_attention_io
from m1.train.model import backbone_hidden


def align_loss(student: torch.nn.Module, teacher: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced alignment: each Mamba mixer reproduces its teacher attention layer's output.

    The teacher runs once with hooks (`m1.convert.capture.record_attention_io`); each student
    mixer then reads the teacher's own input to that attention layer and is scored by
    its squared error relative to the target's power, over real tokens, averaged over the
    Mamba layers. Only the mixers are in the graph, so only they get gradients.
    """
    layers = list(student.config.mamba_layers)
    if not layers:
        raise ValueError("the align stage needs a student with Mamba layers")
    token_mask = attention_mask if attention_mask is not None and not bool(attention_mask.all()) else None
    with torch.no_grad(), record_attention_io(teacher, layers) as got:
        backbone_hidden(teacher, input_ids=input_ids, attention_mask=attention_mask)
        targets = {i: (got[i][0].detach(), got[i][1].detach()) for i in layers}
    real = None if token_mask is None else token_mask.bool()
    total = 0.0
    for i in layers:
        x, y = targets[i]
        mixer = student.model.layers[i].mamba
        pred = mixer(x.to(next(mixer.parameters()).dtype), token_mask=token_mask).float()
        err, power = (pred - y.float()) ** 2, y.float() ** 2
        if real is not None:
            err, power = err[real], power[real]
        total = total + err.mean() / power.mean().clamp(min=1e-12)
    return total / len(layers)
