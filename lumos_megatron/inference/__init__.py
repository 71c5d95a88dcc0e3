"""Inference: load a checkpoint as a model (``load_model``) and, later, AR-DF generation.

``load_model`` imports megatron-core; it is resolved on first access so that importing this
package stays cheap.
"""

from lumos_megatron.lazy_exports import lazy_getattr

_EXPORTS = {"load_model": "lumos_megatron.inference.model_loader",
            "InferenceModel": "lumos_megatron.inference.model_loader"}
__all__ = ["InferenceModel", "load_model"]
__getattr__ = lazy_getattr(__name__, _EXPORTS)
