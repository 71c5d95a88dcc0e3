"""AR-DF: training-time masks (tube mask, CFG drop, frame/prefix rewrites)."""

from lumos_megatron.ardf.pipeline import ardf_batch, prepare_sample
from lumos_megatron.ardf.streams import sample_stream
from lumos_megatron.ardf.tube_mask import (
    TubeMaskResult,
    content_mask,
    tube_mask,
    tube_mask_detailed,
    tube_mask_from_streams,
)

__all__ = ["TubeMaskResult", "ardf_batch", "content_mask", "prepare_sample", "sample_stream",
           "tube_mask", "tube_mask_detailed", "tube_mask_from_streams"]
