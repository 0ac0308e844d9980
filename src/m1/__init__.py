"""m1: hybrid Mamba-2/attention reasoning models from pretrained transformers.

The public names load lazily so that `import m1` (and `m1 --help`) does not pay for
importing torch and transformers until a model is actually touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "HybridConfig": "m1.config",
    "HybridForCausalLM": "m1.modeling",
    "convert_from_transformer": "m1.convert",
}

__all__ = list(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from m1.config import HybridConfig
    from m1.convert import convert_from_transformer
    from m1.modeling import HybridForCausalLM


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm1' has no attribute {name!r}")
