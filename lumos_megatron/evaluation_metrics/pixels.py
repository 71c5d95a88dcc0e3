"""Pixel metrics of videos: PSNR, SSIM and VBench's temporal-flicker score.

Layout and scale, for every function here: a video is ``[T, H, W, C]`` (channels last, as the
video tokenizers and ``inference.video_writer`` use) or a single picture ``[H, W, C]``; ``C`` is 3
(RGB) or 1. Values are uint8, or floats on the same 0..``data_range`` scale (255 by default): a
float video is *not* rescaled from [0, 1]. numpy arrays and torch tensors are both accepted.

Work is done one frame (or a few frames) at a time in float64, so a 384p clip of 25 frames never
needs a float64 copy of the whole clip.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

Video = Union[np.ndarray, torch.Tensor]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma, the weights of MATLAB's ``rgb2gray`` (what Wang et al.'s SSIM code was run on)."""
_FRAMES_PER_CHUNK = 8


def as_video(video: Video, name: str = "video") -> np.ndarray:
    """``video`` as a numpy ``[T, H, W, C]`` array (a ``[H, W, C]`` picture gets ``T = 1``).

    Raises ValueError for another rank, a channel count other than 1 or 3, or an empty axis, and
    TypeError for booleans, complex numbers or non-array input.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if not isinstance(video, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor [T, H, W, C], got {type(video).__name__}")
    if video.dtype == np.bool_ or np.iscomplexobj(video) or not np.issubdtype(video.dtype, np.number):
        raise TypeError(f"{name} must hold real numbers (uint8 or float on the 0..255 scale), got {video.dtype}")
    if video.ndim == 3:
        video = video[None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must be [T, H, W, C] or [H, W, C] with C = 1 or 3 (channels last), "
                         f"got shape {tuple(video.shape)}")
    if 0 in video.shape:
        raise ValueError(f"{name} has an empty axis: shape {tuple(video.shape)}")
    return video


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"the two videos differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}; "
                         "compare the same frames at the same size")


def mean_squared_error(a: Video, b: Video) -> float:
    """Mean of ``(a - b)²`` over every frame, pixel and channel."""
    a, b = as_video(a, "a"), as_video(b, "b")
    _same_shape(a, b)
    total = 0.0
    for fa, fb in zip(a, b):
        diff = fa.astype(np.float64) - fb.astype(np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return total / a.size


def psnr(a: Video, b: Video, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 · log10(data_range² / MSE)``; ``inf`` when identical.

    The MSE is taken over the whole clip (every frame, pixel and channel), i.e. this is the PSNR
    of the clip, not the mean of per-frame PSNRs: one frame that happens to match exactly would
    make such a mean infinite.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    mse = mean_squared_error(a, b)
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[N, 1, H, W]``, 'valid' region only (no padding)."""
    x = F.conv2d(x, window.view(1, 1, -1, 1))
    return F.conv2d(x, window.view(1, 1, 1, -1))


def _planes(frames: np.ndarray, channels: str) -> torch.Tensor:
    """``[t, H, W, C]`` → float64 ``[N, 1, H, W]``: one luma plane per frame, or one per channel."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float64)
    if channels == "luma" and x.shape[-1] == 3:
        x = (x * torch.tensor(LUMA_WEIGHTS, dtype=torch.float64)).sum(-1, keepdim=True)
    return x.permute(0, 3, 1, 2).reshape(-1, 1, x.shape[1], x.shape[2])


def ssim(a: Video, b: Video, data_range: float = 255.0, channels: str = "luma") -> float:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), mean over the clip.

    The standard parameters: an 11x11 Gaussian window with σ = 1.5 (normalised to sum 1),
    ``K1 = 0.01``, ``K2 = 0.03``, ``L = data_range``, population (biased) local variances, and only
    the windows that fit entirely inside the frame ("valid", as the authors' reference code; no
    automatic downsampling). Per window::

        SSIM = (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2)),  C = (K · L)²

    ``channels="luma"`` (default) computes it on BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``
    (unrounded), the usual choice for video; ``"rgb"`` averages the three channels' maps. The
    result is the mean of the SSIM maps of all frames (all frames have the same number of
    windows, so it is also the mean of per-frame SSIMs). Frames must be at least 11x11 pixels.
    """
    if channels not in ("luma", "rgb"):
        raise ValueError(f"channels must be 'luma' or 'rgb', got {channels!r}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    a, b = as_video(a, "a"), as_video(b, "b")
    _same_shape(a, b)
    if min(a.shape[1], a.shape[2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{a.shape[2]}x{a.shape[1]}")
    window = _gaussian_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    total, count = 0.0, 0
    for start in range(0, a.shape[0], _FRAMES_PER_CHUNK):
        x = _planes(a[start: start + _FRAMES_PER_CHUNK], channels)
        y = _planes(b[start: start + _FRAMES_PER_CHUNK], channels)
        mu_x, mu_y = _filter(x, window), _filter(y, window)
        # Local (co)variances as E[xy] - E[x]E[y]; float64 keeps the cancellation harmless at 8 bits.
        var_x = _filter(x * x, window) - mu_x * mu_x
        var_y = _filter(y * y, window) - mu_y * mu_y
        cov = _filter(x * y, window) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
        total += float(ssim_map.sum())
        count += ssim_map.numel()
    return total / count


def frame_differences(video: Video) -> np.ndarray:
    """Mean absolute difference between each pair of consecutive frames (float64 ``[T - 1]``),
    over every pixel and channel, on the video's own scale."""
    video = as_video(video)
    if video.shape[0] < 2:
        raise ValueError(f"frame differences need at least 2 frames, got {video.shape[0]}")
    out = np.empty(video.shape[0] - 1, dtype=np.float64)
    previous = video[0].astype(np.float64)
    for t in range(1, video.shape[0]):
        current = video[t].astype(np.float64)
        out[t - 1] = float(np.abs(current - previous).mean())
        previous = current
    return out


def temporal_flicker(video: Video, data_range: float = 255.0) -> float:
    """VBench's temporal-flickering score of one video: ``(L − mean_t MAE(f_t, f_t+1)) / L``.

    ``MAE`` is the mean absolute difference of two consecutive frames over all pixels and channels
    (VBench: ``np.mean(cv2.absdiff(...))`` on float32 frames), averaged over the ``T − 1`` pairs,
    and ``L = data_range`` (255). 1.0 is a video with no change at all; a video whose frames swing
    between black and white scores 0.0. Higher is better. This is VBench's raw per-video value
    (their ``cal_score``), before the min-max normalisation of their leaderboard tables. VBench
    meant it for static-scene prompts, where any change is flicker; on moving content it also
    penalises motion. Needs at least 2 frames.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return (data_range - float(frame_differences(video).mean())) / data_range
