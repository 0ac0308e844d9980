"""Teacher transformer -> hybrid (`m1 convert`), one stage per module, each importing only those above it here:

- `mapping`: the attention -> Mamba weight mapping, `MambaInit` and `INIT_MODES`;
- `capture`: the teacher's attention inputs and outputs, by forward hooks;
- `calibration_data`: calibration text as token rows (a file, or sampled from the teacher);
- `calibrate`: the calibrated initialisation (`convert_with_report`);
- `fidelity`: how close a hybrid is to its teacher (`token_kl`, `fidelity`);
- `placement`: measured attention placement (`--attention-layers auto:K`);
- `cli`: the command line.
"""

from m1.convert.mapping import INIT_MODES, MambaInit, check_attention_mapping, convert_from_transformer, hybrid_config_from_teacher

__all__ = ["INIT_MODES", "MambaInit", "check_attention_mapping", "convert_from_transformer", "hybrid_config_from_teacher"]
