"""AR-DF generation of video tokens (docs/method.md §5): frame by frame, parallel decoding with
classifier-free guidance, the finished frames cached with the ρ_inf history mask.

Per sample: the conditional sequence is ``prompt_ids + [9004, duration, fps] + given frames +
history``, the unconditional one the same from 9004 on (docs/method.md §5.2: the official
unconditional prompt is a view of the conditional one, so both see the same partly decoded
frame and the same masked history). Every decoding step runs ONE forward for the conditional and
unconditional rows of every sample in the batch; each sample draws from its own generator in the
official order (``frame_decoding``), so its tokens do not depend on the batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from lumos_megatron.ardf.inference_schedule import history_mask_indices
from lumos_megatron.inference.frame_decoding import (
    FrameState,
    TemperatureSchedule,
    block_tensor,
    code_positions,
    decode_step,
    frame_block,
    frame_template,
    mask_history,
)
from lumos_megatron.inference.frame_logits import CachedLogits, FullForwardLogits
from lumos_megatron.tokenizers.video.base import latent_frames_for


@dataclass
class SamplerSettings:
    """How frames are decoded (defaults: the official evaluation settings for T2V)."""

    steps: int = 50
    """Decoding steps per latent frame (official eval scripts: 50)."""
    cfg_scale: float = 15.0
    """Classifier-free guidance scale g in ``g·(cond − uncond) + uncond`` (T2V/I2V 15, T2I 16)."""
    history_mask_ratio: float = 0.7
    """ρ_inf: share of each finished frame's content masked in the cache (official eval: 0.7)."""
    temperature: float = 1.0
    """Initial Gumbel temperature of the re-masking confidence (tokens are always sampled at 1)."""
    temperature_schedule: TemperatureSchedule = "official"
    """'official' (cumulative decay, never reset) or 'per_frame' (reset at every frame)."""
    kv_cache: bool = True
    """Cache the prompt and finished frames; False recomputes the whole context every step."""
    batch_cfg: bool = True
    """Conditional and unconditional rows in one forward; False runs them one after the other."""
    num_visual_codes: Optional[int] = None
    """Sample only the first N visual codes (a video tokenizer with a smaller codebook than the
    model's visual range); None samples every visual id (official)."""


@dataclass
class VideoRequest:
    """One video to generate."""

    prompt_ids: List[int]
    """``[0] + text ids + [8710]`` (the conditional prompt before the video prefix)."""
    latent_grid: Tuple[int, int]
    """(H_l, W_l) latents per frame."""
    fps: int
    """Frame rate written into the video prefix."""
    duration: int
    """Duration (s) written into the video prefix."""
    generator: torch.Generator
    """This sample's random stream, consumed in the official order."""
    num_latent_frames: Optional[int] = None
    """Every latent frame of the video, given ones included (default: ``latent_frames_for(fps·duration)``,
    the count of a tokenizer with the standard temporal compression; callers with another
    tokenizer pass its ``latent_frames(fps·duration)``)."""
    given_frames: List[List[int]] = field(default_factory=list)
    """Complete frame blocks (8197 … 8196) that open the video (I2V), cached clean."""

    def total_frames(self) -> int:
        """Latent frames of the whole video."""
        if self.num_latent_frames is not None:
            return self.num_latent_frames
        return latent_frames_for(self.fps * self.duration)


def _check(requests: Sequence[VideoRequest], vocab) -> Tuple[Tuple[int, int], int]:
    grid = requests[0].latent_grid
    to_generate = requests[0].total_frames() - len(requests[0].given_frames)
    for r in requests:
        if r.latent_grid != grid or r.total_frames() - len(r.given_frames) != to_generate:
            raise ValueError("a batch must share the latent grid and the number of frames to generate")
        if to_generate < 1:
            raise ValueError(f"nothing to generate: {r.total_frames()} latent frames, {len(r.given_frames)} given")
        expected = len(frame_template(vocab, grid))
        for k, block in enumerate(r.given_frames):
            if len(block) != expected or block[0] != vocab.frame_start or block[-1] != vocab.frame_end:
                raise ValueError(f"given frame {k} is not a complete {grid[0]}x{grid[1]} frame block")
    return grid, to_generate


def generate_batch(model, requests: Sequence[VideoRequest], settings: SamplerSettings,
                   on_step: Optional[Callable[[int, int], None]] = None) -> List[List[int]]:
    """Video token lists (9004 … 9005) of ``requests`` (same grid and frame count), generated
    together. ``on_step(frame, step)`` is called after every decoding step."""
    vocab = model.vocab
    grid, to_generate = _check(requests, vocab)
    batch = len(requests)
    codes = code_positions(grid)
    history = history_mask_indices(grid[0] * (grid[1] + 1), settings.history_mask_ratio)
    prefixes = [[vocab.video_start, vocab.size_token(r.duration), vocab.size_token(r.fps)]
                + [t for block in r.given_frames for t in block] for r in requests]
    contexts = [list(r.prompt_ids) + p for r, p in zip(requests, prefixes)] + [list(p) for p in prefixes]
    block_length = len(frame_template(vocab, grid))
    if settings.kv_cache:
        capacity = max(len(c) for c in contexts) + to_generate * block_length
        provider = CachedLogits(model, 2 * batch, capacity)
    else:
        provider = FullForwardLogits(model)
    temperatures = [settings.temperature] * batch
    generated: List[List[List[int]]] = [[] for _ in requests]
    layout = frame_template(vocab, grid)
    # The block template and code offsets once per device a generator lives on: each step's
    # blocks are then assembled where the states are, without a host round trip.
    on_device = {}
    for r in requests:
        device = r.generator.device
        if device not in on_device:
            on_device[device] = (torch.tensor(layout, dtype=torch.long).to(device), codes.to(device))
    for frame in range(to_generate):
        if settings.temperature_schedule == "per_frame":
            temperatures = [settings.temperature] * batch
        states = [FrameState.start(codes.numel(), vocab, t, r.generator.device)
                  for t, r in zip(temperatures, requests)]
        for step in range(settings.steps):
            blocks = [block_tensor(*on_device[s.tokens.device], s.tokens) for s in states] * 2  # cond, then uncond
            row_groups = [list(range(2 * batch))] if settings.batch_cfg else [list(range(batch)),
                                                                              list(range(batch, 2 * batch))]
            logits = torch.cat([provider.frame_logits(rows, [contexts[r] for r in rows], [blocks[r] for r in rows],
                                                      codes, layout=layout) for rows in row_groups])
            states = [_decode(states[i], logits[i], logits[batch + i], step, settings, vocab, requests[i].generator)
                      for i in range(batch)]
            if on_step is not None:
                on_step(frame, step)
        for i, state in enumerate(states):
            finished = frame_block(grid, state.tokens, vocab)
            generated[i].append(finished)
            cached = mask_history(finished, history, vocab)
            contexts[i] += cached
            contexts[batch + i] += cached
            temperatures[i] = state.temperature
    return [p + [t for block in g for t in block] + [vocab.video_end] for p, g in zip(prefixes, generated)]


def _decode(state: FrameState, cond: torch.Tensor, uncond: torch.Tensor, step: int, settings: SamplerSettings,
            vocab, generator: torch.Generator) -> FrameState:
    # The draws happen where the generator lives (a CPU generator reproduces CPU samples; one on
    # the model's device keeps the [N, V] logits there: no host copy).
    device = generator.device
    state = FrameState(state.tokens.to(device), state.unknown.to(device), state.temperature)
    return decode_step(state, cond.to(device), uncond.to(device), step, settings.steps, settings.cfg_scale,
                       vocab, generator, settings.num_visual_codes)


def generate_video_tokens(model, prompt_ids: Sequence[int], *, latent_grid: Tuple[int, int], fps: int,
                          duration: int, steps: int, cfg_scale: float, history_mask_ratio: float,
                          generator: torch.Generator, num_latent_frames: Optional[int] = None,
                          given_frames: Optional[List[List[int]]] = None, temperature: float = 1.0,
                          temperature_schedule: TemperatureSchedule = "official",
                          kv_cache: bool = True) -> List[int]:
    """One video's tokens, from the video start 9004 through the video end 9005.

    ``model`` comes from ``load_model``; ``prompt_ids`` = ``[0] + text ids + [8710]`` (or just the
    text part of an unconditional run); ``given_frames`` (I2V) are returned unchanged; the
    ``generator`` is consumed in the official order (docs/method.md §5.2a).
    """
    request = VideoRequest(list(prompt_ids), tuple(latent_grid), fps, duration, generator, num_latent_frames,
                           [list(b) for b in (given_frames or [])])
    settings = SamplerSettings(steps=steps, cfg_scale=cfg_scale, history_mask_ratio=history_mask_ratio,
                               temperature=temperature, temperature_schedule=temperature_schedule,
                               kv_cache=kv_cache)
    return generate_batch(model, [request], settings)[0]
