"""AR-DF: training-time masks (tube mask, CFG drop, frame/prefix rewrites) and the inference
schedules (tokens left masked per decoding step, the ρ_inf history pattern)."""

from lumos_megatron.ardf.inference_schedule import history_mask_indices, unmask_schedule
from lumos_megatron.ardf.pipeline import ardf_batch, prepare_sample
from lumos_megatron.ardf.random_keys import sample_random_key
from lumos_megatron.ardf.tube_mask import (
    TubeMaskResult,
    content_mask,
    tube_mask,
    tube_mask_detailed,
    tube_mask_from_keys,
)

__all__ = ["TubeMaskResult", "ardf_batch", "content_mask", "history_mask_indices", "prepare_sample",
           "sample_random_key", "tube_mask", "tube_mask_detailed", "tube_mask_from_keys", "unmask_schedule"]
