"""The built-in causal 3D-conv FSQ autoencoder (4x temporal, 8x8 spatial compression).

Causality (the property the Lumos layout relies on: latent frame k may be decoded and predicted
before later RGB frames exist) is built in three ways:

* time is grouped Cosmos-style: the first frame is repeated so that it forms a group of 4 on its
  own, the next frames form groups of 4 (the last group completed by repeating the last frame),
  and each group is folded into channels ("space-time to depth"), so latent frame k sees RGB
  frames ``<= 4k`` only;
* every temporal convolution pads on the past side only (``CausalConv3d``);
* normalisation is per frame (``FrameGroupNorm``): a plain GroupNorm over a 5D tensor would pool
  statistics over time and leak the future into the past.

Everything else is a small conv net (a few residual blocks) so that it trains on a CPU in minutes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION, latent_frames_for
from .fsq import DEFAULT_LEVELS, FSQuantizer

# The first 2x of the 8x spatial compression is space-to-depth, the other 4x are two strided convs.
_PATCH_T, _PATCH_S = TEMPORAL_COMPRESSION, 2


@dataclass
class FSQVideoConfig:
    """Architecture of the FSQ video tokenizer; saved in its checkpoints."""

    channels: tuple[int, int, int] = (32, 64, 64)
    """Widths at 1/2, 1/4 and 1/8 resolution. Small so a CPU trains it in minutes."""
    levels: tuple[int, ...] = DEFAULT_LEVELS
    """FSQ levels per latent channel; their product is the codebook size ((8,5,5,5) = 1,000)."""
    temporal_kernel: int = 3
    """Causal kernel size over latent frames in the residual blocks (1 = frames independent)."""
    norm_groups: int = 8
    """Groups of the per-frame GroupNorm (must divide every width)."""

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        self.levels = tuple(int(v) for v in self.levels)
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be 3 positive widths (1/2, 1/4, 1/8 resolution), got {self.channels}")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"norm_groups={self.norm_groups} must divide every width in {self.channels}")
        if self.temporal_kernel < 1:
            raise ValueError(f"temporal_kernel must be >= 1, got {self.temporal_kernel}")

    def to_dict(self) -> dict:
        """Plain-Python form for checkpoints (lists, not tuples, so any loader can read it)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> FSQVideoConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a checkpoint from another model)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FSQ video tokenizer config keys {unknown}; known: {sorted(known)}")
        return cls(**values)


class CausalConv3d(nn.Module):
    """Conv3d whose temporal padding is on the past side only (replicating the first frame).

    Spatial padding is symmetric zeros, ``(k - 1) // 2``, so stride 1 keeps H and W and stride 2
    halves them (even sizes).
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int], spatial_stride: int = 1):
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=(1, spatial_stride, spatial_stride),
                              padding=(0, (kh - 1) // 2, (kw - 1) // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
            x = torch.cat([first, x], dim=2)
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per (sample, frame), never pooled over time (keeps causality)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    """Pre-norm residual block: (norm, SiLU, causal conv) twice, 1x1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, temporal_kernel: int, groups: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, c_in)
        self.conv1 = CausalConv3d(c_in, c_out, (temporal_kernel, 3, 3))
        self.norm2 = FrameGroupNorm(groups, c_out)
        self.conv2 = CausalConv3d(c_out, c_out, (1, 3, 3))
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    """2x nearest-neighbour spatial upsampling followed by a 3x3 conv."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = CausalConv3d(c_in, c_out, (1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


def causal_group_frames(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, C, 4 T_l, H, W]``: frame 0 repeated to a group of its own, the
    last group completed by repeating the last frame."""
    t = x.shape[2]
    t_l = latent_frames_for(t, _PATCH_T)
    tail = _PATCH_T * t_l - (_PATCH_T - 1) - t
    parts = [x[:, :, :1].expand(-1, -1, _PATCH_T - 1, -1, -1), x]
    if tail:
        parts.append(x[:, :, -1:].expand(-1, -1, tail, -1, -1))
    return torch.cat(parts, dim=2)


def space_time_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, 4 t, 2 h, 2 w]`` -> ``[B, 16 C, t, h, w]`` (each 4x2x2 block folded into channels)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // _PATCH_T, _PATCH_T, h // _PATCH_S, _PATCH_S, w // _PATCH_S, _PATCH_S)
    x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * _PATCH_T * _PATCH_S * _PATCH_S, t // _PATCH_T, h // _PATCH_S, w // _PATCH_S)


def depth_to_space_time(x: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Inverse of ``space_time_to_depth``: ``[B, 16 C, t, h, w]`` -> ``[B, C, 4 t, 2 h, 2 w]``."""
    b, _, t, h, w = x.shape
    x = x.reshape(b, channels, _PATCH_T, _PATCH_S, _PATCH_S, t, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, channels, t * _PATCH_T, h * _PATCH_S, w * _PATCH_S)


class FSQVideoAutoencoder(nn.Module):
    """Causal video autoencoder ``[B, 3, T, H, W]`` in [-1, 1] <-> FSQ indices ``[B, T_l, H/8, W/8]``."""

    def __init__(self, config: FSQVideoConfig | None = None):
        super().__init__()
        self.config = config or FSQVideoConfig()
        c1, c2, c3 = self.config.channels
        kt, g = self.config.temporal_kernel, self.config.norm_groups
        folded = 3 * _PATCH_T * _PATCH_S * _PATCH_S
        self.quantizer = FSQuantizer(self.config.levels)
        self.encoder = nn.Sequential(
            CausalConv3d(folded, c1, (1, 3, 3)),
            ResBlock(c1, c1, kt, g),
            CausalConv3d(c1, c2, (1, 3, 3), spatial_stride=2),
            ResBlock(c2, c2, kt, g),
            CausalConv3d(c2, c3, (1, 3, 3), spatial_stride=2),
            ResBlock(c3, c3, kt, g),
            FrameGroupNorm(g, c3),
            nn.SiLU(),
            nn.Conv3d(c3, self.quantizer.dim, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv3d(self.quantizer.dim, c3, 1),
            ResBlock(c3, c3, kt, g),
            Upsample(c3, c2),
            ResBlock(c2, c2, kt, g),
            Upsample(c2, c1),
            ResBlock(c1, c1, kt, g),
            FrameGroupNorm(g, c1),
            nn.SiLU(),
            CausalConv3d(c1, folded, (1, 3, 3)),
        )

    @property
    def codebook_size(self) -> int:
        """Number of FSQ codes (product of the levels)."""
        return self.quantizer.codebook_size

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``[B, D, T_l, H/8, W/8]`` of a clip ``[B, 3, T, H, W]``."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a video batch [B, 3, T, H, W], got {tuple(x.shape)}")
        if x.shape[3] % SPATIAL_COMPRESSION or x.shape[4] % SPATIAL_COMPRESSION:
            raise ValueError(f"H and W must be multiples of {SPATIAL_COMPRESSION}, got {tuple(x.shape[3:])}")
        return self.encoder(space_time_to_depth(causal_group_frames(x)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip -> ``(codes [B, D, T_l, h, w] normalised, indices [B, T_l, h, w] int64)``."""
        return self.quantizer(self.encode_latent(x), dim=1)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised codes ``[B, D, T_l, h, w]`` -> clip ``[B, 3, 1 + 4 (T_l - 1), 8h, 8w]``."""
        folded = self.decoder(codes)
        return depth_to_space_time(folded)[:, :, _PATCH_T - 1:]

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """int indices ``[B, T_l, h, w]`` -> clip ``[B, 3, 1 + 4 (T_l - 1), 8h, 8w]``."""
        codes = self.quantizer.indices_to_codes(indices).movedim(-1, 1)
        return self.decode_codes(codes.to(self._dtype()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct ``x`` through the quantized bottleneck: ``(reconstruction [B,3,T,H,W], indices)``.

        The reconstruction is cut to the input's ``T`` frames (the padded tail is dropped).
        """
        codes, indices = self.encode(x)
        recon = self.decode_codes(codes)[:, :, : x.shape[2]]
        return recon, indices

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
