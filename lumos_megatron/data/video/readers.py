"""One reader interface over three decode backends, and the automatic choice between them.

| backend    | runs on                  | decodes                                            |
|------------|--------------------------|----------------------------------------------------|
| ``dali_gpu`` | DALI "mixed" (NVDEC)   | H.264, HEVC, AV1, MPEG-4, VP8, VP9, MJPEG          |
| ``dali_cpu`` | DALI CPU               | VP8, VP9, MJPEG                                    |
| ``pyav``     | FFmpeg via PyAV, CPU   | everything FFmpeg decodes                          |

``backend="auto"`` picks, per file: ``dali_gpu`` for H.264/HEVC/AV1 when DALI and a CUDA GPU are
present; ``dali_cpu`` for VP8/VP9/MJPEG when DALI is present; ``pyav`` otherwise. Naming a backend
overrides the choice; a named backend that cannot decode the file's codec raises
``MediaError(reason="unsupported_codec")`` and one that cannot run here raises
``BackendUnavailableError``.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .dali_backend import cuda_available, dali_available, read_frames_dali
from .errors import UNSUPPORTED_CODEC, BackendUnavailableError, MediaError
from .pyav_backend import VideoInfo, check_file, probe, read_frames_pyav

BACKENDS = ("dali_gpu", "dali_cpu", "pyav")
AUTO = "auto"

# What "auto" sends to NVDEC: the codecs where GPU decoding pays off most.
NVDEC_AUTO_CODECS = frozenset({"h264", "hevc", "av1"})
# What each DALI device can decode at all (DALI's decoders.video documentation).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = NVDEC_AUTO_CODECS | DALI_CPU_CODECS | {"mpeg4"}

__all__ = ["AUTO", "BACKENDS", "VideoInfo", "available_backends", "backend_can_decode",
           "check_file", "choose_backend", "probe", "read_frames", "read_frames_with"]


def available_backends() -> Tuple[str, ...]:
    """The backends that can run in this process, best first (``pyav`` always)."""
    names = []
    if dali_available():
        if cuda_available():
            names.append("dali_gpu")
        names.append("dali_cpu")
    names.append("pyav")
    return tuple(names)


def backend_can_decode(backend: str, codec: str) -> bool:
    """Whether ``backend`` supports ``codec`` (FFmpeg canonical name), regardless of installation."""
    if backend == "dali_gpu":
        return codec in DALI_GPU_CODECS
    if backend == "dali_cpu":
        return codec in DALI_CPU_CODECS
    if backend == "pyav":
        return bool(codec)
    raise ValueError(f"unknown decode backend {backend!r}; expected 'auto' or one of {BACKENDS}")


def choose_backend(codec: str, backend: str = AUTO, *, path: str = "",
                   dali: Optional[bool] = None, gpu: Optional[bool] = None) -> str:
    """The backend that will decode a ``codec`` stream: ``backend`` itself if named, else the auto rule.

    ``dali``/``gpu`` override detection (for tests and planning); ``path`` only names the file
    in errors. Raises ``MediaError(unsupported_codec)`` for a named backend that cannot decode
    ``codec`` and ``BackendUnavailableError`` for a named backend that cannot run here.
    """
    # Detection is lazy: a codec only PyAV handles never imports DALI or torch.
    has_dali = dali_available if dali is None else (lambda: dali)
    has_gpu = cuda_available if gpu is None else (lambda: gpu)
    if backend == AUTO:
        if codec in NVDEC_AUTO_CODECS and has_dali() and has_gpu():
            return "dali_gpu"
        if codec in DALI_CPU_CODECS and has_dali():
            return "dali_cpu"
        if not codec:
            raise MediaError(path, UNSUPPORTED_CODEC, "FFmpeg has no decoder for this stream")
        return "pyav"
    if not backend_can_decode(backend, codec):
        raise MediaError(path, UNSUPPORTED_CODEC,
                         f"backend {backend!r} cannot decode codec {codec or 'unknown'!r}")
    if backend.startswith("dali") and not has_dali():
        raise BackendUnavailableError(f"backend {backend!r} needs DALI (pip install "
                                      f"nvidia-dali-cuda120); use backend='pyav' or 'auto'")
    if backend == "dali_gpu" and not has_gpu():
        raise BackendUnavailableError("backend 'dali_gpu' needs a CUDA GPU; use 'dali_cpu', 'pyav' or 'auto'")
    return backend


def _validate_indices(indices: Sequence[int], info: VideoInfo) -> np.ndarray:
    array = np.asarray(indices)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"frame indices must be a non-empty 1-D integer sequence, got {array!r}")
    if array.min() < 0 or array.max() >= info.num_frames:
        raise ValueError(f"frame indices must lie in [0, {info.num_frames}) for {info.path}, "
                         f"got min {array.min()} max {array.max()}")
    return array.astype(np.int64)


def read_frames_with(path: str, indices: Sequence[int], backend: str = AUTO,
                     info: Optional[VideoInfo] = None) -> Tuple[np.ndarray, str]:
    """(uint8 [T,H,W,3] RGB frames ``indices`` of ``path``, name of the backend that decoded them).

    ``info`` (from :func:`probe`) saves probing the file again. Raises ``MediaError`` for bad
    files and ``ValueError`` for indices outside the stream.
    """
    path = str(path)
    info = probe(path) if info is None else info
    wanted = _validate_indices(indices, info)
    chosen = choose_backend(info.codec, backend, path=path)
    if chosen == "pyav":
        frames = read_frames_pyav(path, wanted)
    else:
        frames = read_frames_dali(path, wanted, "mixed" if chosen == "dali_gpu" else "cpu")
    return frames, chosen


def read_frames(path: str, indices: Sequence[int], backend: str = AUTO,
                info: Optional[VideoInfo] = None) -> np.ndarray:
    """Frames ``indices`` (presentation order, 0-based) of ``path`` as uint8 [T,H,W,3] RGB.

    ``backend``: ``"auto"`` (see module docstring) or one of :data:`BACKENDS`.
    """
    return read_frames_with(path, indices, backend, info)[0]
