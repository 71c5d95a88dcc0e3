"""Models: LumosModel (megatron-core GPTModel + our layer spec), MM-RoPE and frame-causal attention.

Submodules are imported lazily so that pure-tensor helpers (``mm_rope``, ``frame_mask``,
``inputs``) and the attention-backend registry can be used without loading megatron-core.
"""

from lumos_megatron.lazy_exports import lazy_getattr

_LAZY = {
    "LumosModel": "lumos_megatron.models.lumos_model",
    "build_model_chunks": "lumos_megatron.models.lumos_model",
    "ModelInputs": "lumos_megatron.models.inputs",
    "build_model_inputs": "lumos_megatron.models.inputs",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
