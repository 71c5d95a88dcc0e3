"""Models: LumosModel (megatron-core GPTModel + our layer spec), MM-RoPE and frame-causal attention.

Submodules are imported lazily so that pure-tensor helpers (``mm_rope``, ``frame_mask``,
``inputs``) and the attention-backend registry can be used without loading megatron-core.
"""

import importlib

_LAZY = {
    "LumosModel": "lumos_megatron.models.lumos_model",
    "build_model_chunks": "lumos_megatron.models.lumos_model",
    "ModelInputs": "lumos_megatron.models.inputs",
    "build_model_inputs": "lumos_megatron.models.inputs",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumos_megatron.models' has no attribute {name!r}")
