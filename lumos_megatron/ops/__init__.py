"""Python front of the csrc extension: each op with a pure-PyTorch reference of identical semantics.

The public names dispatch to ``lumos_megatron._C`` for the tensor's device when it is built (and
``LUMOS_NO_EXT`` is not 1), else to the ``*_reference`` functions.
"""

from lumos_megatron.ops.chunked_ce import (
    ce_chunk_backward_,
    ce_chunk_backward_reference_,
    ce_chunk_forward,
    ce_chunk_forward_reference,
)
from lumos_megatron.ops.counter_rng import mix32, mix32_int, pattern_keys, key_base
from lumos_megatron.ops.extension import extension_available, load_extension
from lumos_megatron.ops.tube_patterns import tube_mask_apply, tube_mask_apply_reference, tube_pattern

__all__ = [
    "ce_chunk_backward_",
    "ce_chunk_backward_reference_",
    "ce_chunk_forward",
    "ce_chunk_forward_reference",
    "extension_available",
    "load_extension",
    "mix32",
    "mix32_int",
    "pattern_keys",
    "key_base",
    "tube_mask_apply",
    "tube_mask_apply_reference",
    "tube_pattern",
]
