"""GPU smoke check of the calibration and align paths on a tiny random Llama (run before the study)."""
import sys, time, json
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from transformers import LlamaConfig, LlamaForCausalLM
from m1.convert.calibrate import CalibrationConfig, calibrate
from m1.convert.mapping import convert_from_transformer
from m1.convert.fidelity import fidelity
from m1.train.align import align_loss

dev = torch.device("cuda")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512)
T = LlamaForCausalLM(cfg).to(dev).eval()
S = convert_from_transformer(T, [1], init="attention", mamba_heads=8, mamba_head_dim=16, mamba_groups=8, state_size=16).to(dev)
ids = torch.randint(0, 256, (8, 128), device=dev)
before = fidelity(T, S, ids)["heldout_kl"]
t = time.time()
rep = calibrate(S, T, ids, None, CalibrationConfig(fit_seconds=5, fit_batch=4), progress=False)
after = fidelity(T, S, ids)["heldout_kl"]
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = align_loss(S, T, ids)
loss.backward()
grads = sorted({n.split(".")[3] for n, p in S.named_parameters() if p.grad is not None})
print(json.dumps({"kl_before": before, "kl_after": after, "calib_s": time.time() - t, "align_loss": loss.item(), "grad_modules": grads,
                  "fit_steps": [l.fit_steps for l in rep.layers]}))
