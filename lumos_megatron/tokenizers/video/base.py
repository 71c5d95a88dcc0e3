"""The video tokenizer interface shared by the Cosmos DV wrapper and the built-in FSQ tokenizer.

Both tokenizers are *causal* 4x8x8 tokenizers: the first RGB frame is encoded alone, every later
latent frame covers the next 4 RGB frames, and each latent token covers an 8x8 pixel patch. So

* ``T`` RGB frames give ``latent_frames(T) = 1 + ceil((T - 1) / 4)`` latent frames, and
* decoding ``T_l`` latent frames gives ``1 + 4 (T_l - 1)`` RGB frames.

Clip lengths. Any ``T >= 1`` is accepted, not only ``1 + 4k``: Lumos-1 itself tokenizes
24-frame clips (2 s at 12 fps) into 7 latent frames. When ``T - 1`` is not a multiple of 4 the
last latent frame covers fewer than 4 frames; it is completed by the tokenizer (the Cosmos JIT
pads internally; the FSQ tokenizer repeats the last frame), and ``decode`` returns the full
``1 + 4 (T_l - 1)`` frames, so callers that need exactly ``T`` frames keep ``[:T]``.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch

VideoArray = torch.Tensor | np.ndarray

TEMPORAL_COMPRESSION = 4
SPATIAL_COMPRESSION = 8


def latent_frames_for(num_frames: int, temporal_compression: int = TEMPORAL_COMPRESSION) -> int:
    """Latent frames of a causal tokenizer for ``num_frames`` RGB frames: first alone, then groups."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least 1 frame, got {num_frames}")
    return 1 + math.ceil((num_frames - 1) / temporal_compression)


def rgb_frames_for(num_latent_frames: int, temporal_compression: int = TEMPORAL_COMPRESSION) -> int:
    """RGB frames produced by decoding ``num_latent_frames`` latent frames: ``1 + 4 (T_l - 1)``."""
    if num_latent_frames < 1:
        raise ValueError(f"codes need at least 1 latent frame, got {num_latent_frames}")
    return 1 + temporal_compression * (num_latent_frames - 1)


def check_video(video: VideoArray, spatial_compression: int = SPATIAL_COMPRESSION) -> torch.Tensor:
    """Validate an RGB clip ``[T, H, W, 3]`` of dtype uint8 and return it as a CPU uint8 tensor."""
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8:
            raise TypeError(f"video must be uint8 RGB [T, H, W, 3], got numpy dtype {video.dtype}; "
                            f"convert with video.astype(np.uint8) after scaling to 0..255")
        video = torch.from_numpy(np.ascontiguousarray(video))
    elif isinstance(video, torch.Tensor):
        if video.dtype != torch.uint8:
            raise TypeError(f"video must be uint8 RGB [T, H, W, 3], got torch dtype {video.dtype}; "
                            f"convert with video.to(torch.uint8) after scaling to 0..255")
        video = video.detach().cpu()
    else:
        raise TypeError(f"video must be a uint8 torch.Tensor or numpy array [T, H, W, 3], "
                        f"got {type(video).__name__}")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must have shape [T, H, W, 3] (RGB, channels last), got "
                         f"{tuple(video.shape)}; add a frame axis for a single image")
    t, h, w, _ = video.shape
    if t < 1:
        raise ValueError("video has 0 frames; pass at least 1 frame")
    if h % spatial_compression or w % spatial_compression or h == 0 or w == 0:
        raise ValueError(f"video height and width must be positive multiples of {spatial_compression}, "
                         f"got {h}x{w}; crop or resize the frames first")
    return video


def check_codes(codes: VideoArray, codebook_size: int) -> torch.Tensor:
    """Validate a code grid ``[T_l, H_l, W_l]`` of integers in ``[0, codebook_size)``; return int64."""
    if isinstance(codes, np.ndarray):
        codes = torch.from_numpy(np.ascontiguousarray(codes))
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes must be an integer torch.Tensor or numpy array [T_l, H_l, W_l], "
                        f"got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
        raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.ndim != 3 or codes.numel() == 0:
        raise ValueError(f"codes must have shape [T_l, H_l, W_l] with no empty axis, got {tuple(codes.shape)}")
    codes = codes.detach().cpu().long()
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got values in [{low}, {high}]; "
                         f"LLM ids must have the visual offset (65536) removed first")
    return codes


def video_to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float64 ``[1, 3, T, H, W]`` in [-1, 1] (``x / 255 * 2 - 1``).

    float64 on purpose: the official Lumos path computes ``np.array(img) / 255.0 * 2 - 1`` in
    float64 and casts to the tokenizer dtype afterwards, so the rounding to bf16 is identical.
    """
    x = video.to(torch.float64) / 255.0
    x = x * 2 - 1
    return x.permute(3, 0, 1, 2).unsqueeze(0)


def unit_range_to_video(x: torch.Tensor, rounding: str = "round") -> torch.Tensor:
    """float ``[1, 3, T, H, W]`` in [-1, 1] -> uint8 ``[T, H, W, 3]`` on the CPU.

    ``rounding="truncate"`` reproduces Lumos-1's ``_pil_from_chw_tensor`` (``(x * 255).astype(uint8)``);
    ``"round"`` rounds to the nearest level (Cosmos ``tensor2numpy``), which is 0.5 levels more accurate.
    """
    if rounding not in ("round", "truncate"):
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    x = x[0].detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0 * 255.0
    if rounding == "round":
        x = x + 0.5
    return x.to(torch.uint8).permute(1, 2, 3, 0).contiguous()


class VideoTokenizer(abc.ABC):
    """A causal video tokenizer: uint8 RGB clips <-> integer code grids.

    Attributes:
        name: short identifier (e.g. ``"cosmos-dv4x8x8"``), recorded in pre-tokenized metadata.
        codebook_size: number of distinct codes; codes lie in ``[0, codebook_size)``.
        temporal_compression: RGB frames per latent frame after the first (4).
        spatial_compression: pixels per latent token along H and W (8).
    """

    name: str = "video-tokenizer"
    codebook_size: int
    temporal_compression: int = TEMPORAL_COMPRESSION
    spatial_compression: int = SPATIAL_COMPRESSION

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` RGB frames: ``1 + ceil((T - 1) / 4)``."""
        return latent_frames_for(num_frames, self.temporal_compression)

    def decoded_frames(self, num_latent_frames: int) -> int:
        """RGB frames that ``decode`` returns for ``num_latent_frames``: ``1 + 4 (T_l - 1)``."""
        return rgb_frames_for(num_latent_frames, self.temporal_compression)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple:
        """Shape ``(T_l, H_l, W_l)`` of the codes of a ``[T, H, W, 3]`` clip."""
        s = self.spatial_compression
        return self.latent_frames(num_frames), height // s, width // s

    @abc.abstractmethod
    def encode(self, video: VideoArray) -> torch.Tensor:
        """uint8 RGB ``[T, H, W, 3]`` -> int64 codes ``[T_l, H_l, W_l]`` in ``[0, codebook_size)``."""

    @abc.abstractmethod
    def decode(self, codes: VideoArray) -> torch.Tensor:
        """int codes ``[T_l, H_l, W_l]`` -> uint8 RGB ``[1 + 4 (T_l - 1), 8 H_l, 8 W_l, 3]``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, codebook_size={self.codebook_size})"
