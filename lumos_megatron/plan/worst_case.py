"""The worst-case step a recipe allows, as real micro-batches built on the CPU.

The planner never reads the recipe's data paths. It plans every sample as long as the stream's
padded length (``data.seq_length`` for video steps; ``image_seq_length`` for the image steps of
joint training), laid out as a real Lumos sample: a caption, the video prefix and as many latent
frames as training keeps (``ardf.max_latent_frames``; one for images) of the largest ~16:9 code
grid that fits, the caption filling the rest to the exact length. The micro-batches then go
through the same objective (AR-DF transforms and tube mask), input derivation (positions, the
backend's mask) and context-parallel slicing as training's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.sources import IMAGE, VIDEO
from lumos_megatron.training.data_plan import StepPlan
from lumos_megatron.vocab import LumosVocab, frame_block_length

_FIXED_TOKENS = 1 + 1 + 3 + 2  # BOS, separator, the 3 prefix ids, video end + EOS (mock layout)
_MIN_CAPTION = 16


@dataclass(frozen=True)
class PlannedStream:
    """One kind of optimizer step the planner traces."""

    name: str
    """``video`` or ``image``."""
    seq_length: int
    """Every sample's length (the stream's padded length)."""
    micro_batch_size: int
    """Samples per micro-batch."""
    microbatches_per_step: int
    """Gradient-accumulation micro-batches of a real step on each DP rank."""
    traced_microbatches: int
    """Micro-batches the trace runs (enough to reach the schedule's peak; see :func:`traced_count`)."""
    frames: int
    """Latent frames of each planned sample."""
    grid: Tuple[int, int]
    """Latent code grid (rows, columns) of each frame."""
    caption_tokens: int
    """Caption length that fills the sample to ``seq_length``."""


def sample_shape(seq_length: int, frames: int) -> Tuple[Tuple[int, int], int]:
    """((rows, cols), caption tokens) of a ``frames``-frame sample of exactly ``seq_length``
    tokens: the largest ~16:9 grid (latent extents are multiples of 4) whose frames fit next to a
    short caption."""
    budget = seq_length - _FIXED_TOKENS - _MIN_CAPTION
    if budget < frames * frame_block_length(4, 4):
        raise ValueError(f"a {frames}-frame sample of 4x4 latents does not fit in {seq_length} tokens")
    best = (4, 4)
    rows = 4
    while True:
        cols = max(4, 4 * round(rows * 16 / 9 / 4))
        if frames * frame_block_length(rows, cols) > budget:
            break
        best = (rows, cols)
        rows += 4
    caption = seq_length - _FIXED_TOKENS - frames * frame_block_length(*best)
    return best, caption


def sample_frames(seq_length: int, wanted: int) -> int:
    """Latent frames of a planned sample: ``wanted``, fewer if even 4x4 frames do not fit."""
    frames = max(1, wanted)
    while frames > 1 and seq_length - _FIXED_TOKENS - _MIN_CAPTION < frames * frame_block_length(4, 4):
        frames -= 1
    return frames


def traced_count(microbatches: int, pp: int, vpp: Optional[int]) -> int:
    """Micro-batches a trace needs to reach the peak of a step of ``microbatches``.

    Without pipelining every micro-batch frees its activations in its own backward, so one shows
    the peak (gradients accumulate in preallocated buffers). 1F1B keeps up to PP micro-batches in
    flight on the first stage. The interleaved schedule's first rank runs
    ``2 (PP - 1) + (VPP - 1) PP`` chunk forwards before its first backward, fewer than the
    ``2 PP x VPP`` chunk forwards of 2 x PP micro-batches, so 2 x PP micro-batches reach its
    steady state (and its peak) too. The trace runs that many, capped at the real count (which
    the schedules need to be a multiple of PP, as 2 x PP is).
    """
    if pp == 1:
        return 1
    return min(microbatches, 2 * pp)


def planned_streams(cfg: LumosConfig, dp: int, pp: int, vpp: Optional[int]) -> List[PlannedStream]:
    """The distinct step kinds of ``cfg`` (video; and image with joint training), worst case."""
    plan = StepPlan(cfg, dp)
    out = []
    for name in (VIDEO, IMAGE):
        stream = plan.streams.get(name)
        if stream is None:
            continue
        frames = 1 if name == IMAGE else sample_frames(stream.seq_length, cfg.ardf.max_latent_frames or 7)
        grid, caption = sample_shape(stream.seq_length, frames)
        micro = stream.num_microbatches(dp)
        out.append(PlannedStream(name, stream.seq_length, stream.micro_batch_size, micro,
                                 traced_count(micro, pp, vpp), frames, grid, caption))
    return out


def _mock_config(cfg: LumosConfig, stream: PlannedStream) -> LumosConfig:
    mock = copy.deepcopy(cfg)
    d = mock.data
    d.mock, d.mock_frames, d.mock_grid, d.mock_text_tokens = True, stream.frames, list(stream.grid), stream.caption_tokens
    d.mock_classes = 0
    d.seq_length = stream.seq_length
    return mock


def stream_micro_batches(cfg: LumosConfig, vocab: LumosVocab, stream: PlannedStream, cp_rank: int,
                         iteration: int = 0) -> Tuple[List[Dict[str, torch.Tensor]], float]:
    """(this CP rank's traced micro-batches of ``stream``, on the CPU; their allowed attention
    pairs). Built exactly as training builds them (``training.batch.rank_micro_batch``)."""
    from lumos_megatron.data.mock import MockVideoDataset
    from lumos_megatron.objective import build_objective
    from lumos_megatron.training.batch import rank_micro_batch

    objective = build_objective(cfg, vocab)
    source = MockVideoDataset(_mock_config(cfg, stream), vocab, frames=stream.frames,
                              seq_length=stream.seq_length)
    batches, pairs = [], 0.0
    for m in range(stream.traced_microbatches):
        indices = [m * stream.micro_batch_size + i for i in range(stream.micro_batch_size)]
        samples = [source[i] for i in indices]
        # With data.packing a micro-batch is one packed sequence (here: the worst-case sample as
        # its only document), built as training builds it: document ids, per-sample parse.
        target = objective.targets(samples, indices, iteration, stream.seq_length, packed=cfg.data.packing)
        batch, micro_pairs = rank_micro_batch(target, cfg, vocab, objective, cp_rank)
        batches.append(batch)
        pairs += micro_pairs
    return batches, pairs


def loss_rows(batches: List[Dict[str, torch.Tensor]]) -> int:
    """Loss-carrying positions of the batches (the fused loss's rows)."""
    return int(sum(float(b["loss_mask"].sum()) for b in batches))


def tokens_per_sample_note(stream: PlannedStream) -> str:
    """Human description of the planned sample."""
    rows, cols = stream.grid
    return (f"{stream.name}: {stream.micro_batch_size} x {stream.seq_length} tokens "
            f"({stream.frames} latent frame{'s' if stream.frames > 1 else ''} of {rows}x{cols} codes, "
            f"{stream.caption_tokens}-token caption), {stream.traced_microbatches} of "
            f"{stream.microbatches_per_step} micro-batches traced")

