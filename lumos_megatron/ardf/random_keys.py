"""Counter-based random keys for the training-time transforms (docs/method.md §4).

Every random decision about a sample (its CFG drop, its mask ratio and tube pattern) is a pure
function of (seed, iteration, global sample index, purpose). Nothing depends on how samples are
spread over DP ranks and micro-batches or on which process drew before: a resumed run and a run
at another DP size make exactly the same decisions.
"""

from __future__ import annotations

from lumos_megatron.ops.counter_rng import mix32_int, key_base

PURPOSE_TUBE_MASK = 1
"""Key of the tube mask (ratio and spatial pattern)."""
PURPOSE_CFG_DROP = 2
"""Key of the classifier-free-guidance drop decision."""


def sample_random_key(seed: int, iteration: int, sample_index: int, purpose: int) -> int:
    """Non-negative int64 key id of one (seed, iteration, global sample, purpose)."""
    for name, value in (("seed", seed), ("iteration", iteration), ("sample_index", sample_index)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    hi = mix32_int(mix32_int(seed & 0xFFFFFFFF) ^ mix32_int(purpose ^ (seed >> 32)))
    lo = mix32_int(mix32_int(iteration & 0xFFFFFFFF) ^ mix32_int(sample_index & 0xFFFFFFFF)
                   ^ (sample_index >> 32) ^ (((iteration >> 32) * 0x9E3779B9) & 0xFFFFFFFF))
    return ((hi & 0x7FFFFFFF) << 32) | lo


def key_uniform(key: int) -> float:
    """One U[0,1) draw of a key (its first counter value)."""
    return key_base(key) / 2.0 ** 32
