"""DALI decoding: ``fn.decoders.video`` on CPU (VP8/VP9/MJPEG) or "mixed" (NVDEC: H.264/HEVC/AV1, ...).

DALI is optional: nothing here imports it until a DALI backend is used. One tiny pipeline per
device (batch 1, one or two threads) is built on first use and reused; each call feeds the file's
bytes and the wanted frame list through ``external_source``. The decoder's ``frames`` argument
decodes exactly those presentation-order indices (DALI seeks with its own keyframe index), so no
contiguous span is decoded and thrown away. ``pad_mode="none"`` makes an index past the end of the
stream (or a truncated file) an error instead of silently returning black padding frames.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Dict, Sequence

import numpy as np

from .errors import CORRUPT, BackendUnavailableError, MediaError

DALI_DEVICES = ("cpu", "mixed")
_PIPELINES: Dict[str, object] = {}


@lru_cache(maxsize=None)
def dali_available() -> bool:
    """True when ``nvidia.dali`` imports (decoding on CPU works with it even without a GPU)."""
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        return False
    try:
        import nvidia.dali  # noqa: F401
    except Exception:  # noqa: BLE001  a broken install (missing CUDA libs, ABI mismatch) counts as absent
        return False
    return True


def cuda_available() -> bool:
    """True when a CUDA device is visible to torch (the GPU "mixed" backend needs one)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _build_pipeline(device: str):
    from nvidia.dali import fn, pipeline_def, types

    device_id = None
    if device == "mixed":
        import torch

        device_id = torch.cuda.current_device()

    @pipeline_def(batch_size=1, num_threads=2 if device == "mixed" else 1, device_id=device_id,
                  prefetch_queue_depth=1)
    def video_pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, device="cpu")
        frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1, device="cpu")
        return fn.decoders.video(encoded, device=device, frames=frames, pad_mode="none")

    pipeline = video_pipeline()
    pipeline.build()
    return pipeline


def _pipeline(device: str):
    if device not in DALI_DEVICES:
        raise ValueError(f"unknown DALI device {device!r}; expected one of {DALI_DEVICES}")
    if not dali_available():
        raise BackendUnavailableError("DALI is not installed; pip install nvidia-dali-cuda120 "
                                      "or use backend='pyav'")
    if device == "mixed" and not cuda_available():
        raise BackendUnavailableError("backend 'dali_gpu' needs a CUDA GPU; use 'dali_cpu' or 'pyav'")
    if device not in _PIPELINES:
        _PIPELINES[device] = _build_pipeline(device)
    return _PIPELINES[device]


def _short_reason(exc: Exception) -> str:
    """DALI errors carry a pipeline traceback; the decoder's own message is the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def read_frames_dali(path: str, indices: Sequence[int], device: str) -> np.ndarray:
    """Decode frames ``indices`` (presentation order, any order/repeats) with DALI: uint8 [T,H,W,3] RGB.

    ``device`` is ``"cpu"`` or ``"mixed"`` (NVDEC; the result is copied back to host memory).
    Raises ``MediaError(reason="corrupt")`` when DALI cannot decode the file or a frame.
    """
    pipeline = _pipeline(device)
    indices = np.asarray(indices, dtype=np.int64)
    # Decode each frame once, in order (cheapest for the decoder), then expand repeats/order.
    unique = np.unique(indices)
    try:
        encoded = np.fromfile(path, dtype=np.uint8)
        pipeline.feed_input("encoded", [encoded])
        pipeline.feed_input("frames", [unique.astype(np.int32)])
        (output,) = pipeline.run()
        if device == "mixed":
            output = output.as_cpu()
        frames = np.array(output.at(0), copy=True)
    except RuntimeError as exc:
        # A failed run can leave the pipeline unusable: rebuild it for the next file.
        _PIPELINES.pop(device, None)
        raise MediaError(path, CORRUPT, f"DALI {device} decode failed: {_short_reason(exc)}") from exc
    if frames.ndim != 4 or frames.shape[0] != unique.size:
        raise MediaError(path, CORRUPT, f"DALI returned {frames.shape[:1]} frames for {unique.size} requested")
    return frames[np.searchsorted(unique, indices)]
