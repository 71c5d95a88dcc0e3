"""The AR-DF training transforms of one micro-batch, in the official order (docs/method.md §4):
prompt placeholders, frame dropping, duration/fps rewrite, CFG drop, padding, tube mask. The attention mask and
MM-RoPE positions are then built on the masked input (``training.batch``)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from lumos_megatron.ardf.sample_transforms import cfg_drop_eligible, keep_first_frames, rewrite_duration_fps
from lumos_megatron.ardf.random_keys import PURPOSE_CFG_DROP, PURPOSE_TUBE_MASK, sample_random_key, key_uniform
from lumos_megatron.ardf.tube_mask import TubeMaskResult, tube_mask_from_keys
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.collate import pad_samples, sample_lengths
from lumos_megatron.tokenizers.text.placeholders import NumberIds, fill_placeholders
from lumos_megatron.vocab import LumosVocab, unconditional

Sample = Tuple[torch.Tensor, torch.Tensor]


def _fill_prompt_numbers(tokens: torch.Tensor, labels: torch.Tensor, vocab: LumosVocab,
                         number_ids: Optional[NumberIds]) -> Sample:
    """Official step 1: the prompt's frames/fps placeholders get the numbers of the (final) video
    prefix, ``duration x fps`` frames at ``fps`` ("24 frames at 12 frames per second")."""
    starts = (tokens == vocab.video_start).nonzero()
    if not starts.numel():
        return tokens, labels
    first = int(starts[0])
    duration = vocab.size_value(int(tokens[first + 1]))
    fps = vocab.size_value(int(tokens[first + 2]))
    return fill_placeholders(tokens, labels, duration * fps, fps, number_ids, vocab)


def prepare_sample(tokens: torch.Tensor, labels: torch.Tensor, cfg: LumosConfig, vocab: LumosVocab,
                   iteration: int, sample_index: int, number_ids: Optional[NumberIds] = None) -> Sample:
    """Placeholder filling, frame dropping, prefix rewrite and CFG drop of one unpadded sample.

    ``number_ids`` writes a number with the dataset's text tokenizer (None: Chameleon's digits).
    The placeholders are filled from the final prefix, so doing it after the rewrite gives the
    official step-1 result with the rewritten values.
    """
    a = cfg.ardf
    tokens, labels = keep_first_frames(tokens, labels, a.max_latent_frames, vocab)
    if a.rewrite_duration_fps and bool((tokens == vocab.video_start).any()):
        frames = int((tokens == vocab.frame_start).sum())
        duration, fps = (a.video_duration, a.video_fps) if frames > 1 else (1, 1)
        tokens, labels = rewrite_duration_fps(tokens, labels, duration, fps, vocab)
    tokens, labels = _fill_prompt_numbers(tokens, labels, vocab, number_ids)
    if a.cfg_drop_prob > 0 and cfg_drop_eligible(tokens, vocab):
        draw = key_uniform(sample_random_key(cfg.train.seed, iteration, sample_index, PURPOSE_CFG_DROP))
        if draw < a.cfg_drop_prob:
            tokens, labels = unconditional(tokens, labels, vocab)
    return tokens, labels


def ardf_batch(samples: Sequence[Sample], sample_indices: Sequence[int], iteration: int,
               cfg: LumosConfig, vocab: LumosVocab, seq_length: Optional[int] = None,
               number_ids: Optional[NumberIds] = None) -> TubeMaskResult:
    """Unpadded samples with their global indices → the masked batch, padded to ``seq_length``
    (default ``data.seq_length``)."""
    if len(samples) != len(sample_indices):
        raise ValueError(f"{len(samples)} samples but {len(sample_indices)} sample indices")
    prepared = [prepare_sample(t, l, cfg, vocab, iteration, i, number_ids)
                for (t, l), i in zip(samples, sample_indices)]
    tokens, labels = pad_samples(prepared, seq_length or cfg.data.seq_length, vocab, sample_indices)
    keys = [sample_random_key(cfg.train.seed, iteration, i, PURPOSE_TUBE_MASK) for i in sample_indices]
    result = tube_mask_from_keys(tokens, labels, vocab, keys, cfg.ardf.min_mask_ratio, cfg.ardf.mask_pattern)
    result.lengths = sample_lengths(prepared)
    return result
