"""Inference: a checkpoint as a model (``load_model``) and AR-DF generation of video tokens
(``generate_video_tokens``, ``generate_batch``).

Resolved on first access, so that importing this package stays cheap (megatron-core loads with
the model).
"""

from lumos_megatron.lazy_exports import lazy_getattr

_EXPORTS = {
    "load_model": "lumos_megatron.inference.model_loader",
    "InferenceModel": "lumos_megatron.inference.model_loader",
    "generate_video_tokens": "lumos_megatron.inference.generation",
    "generate_batch": "lumos_megatron.inference.generation",
    "SamplerSettings": "lumos_megatron.inference.generation",
    "VideoRequest": "lumos_megatron.inference.generation",
}
__all__ = ["InferenceModel", "SamplerSettings", "VideoRequest", "generate_batch", "generate_video_tokens",
           "load_model"]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
