"""Which source frames become training frames: the "exact" rate rule and the official Lumos-1 rule.

Both modes take ``round(target_fps * duration)`` frames from a window of about ``duration`` seconds
centred on the middle of the clip, and both skip a clip shorter than ``duration`` (``too_short``).

* ``"exact"`` (default): one sample per output frame at exactly ``target_fps``. Output frame k
  covers ``[t0 + k/fps, t0 + (k+1)/fps)`` with ``t0 = (clip_seconds - duration) / 2``; source frame i
  covers ``[i/src_fps, (i+1)/src_fps)``; we take the source frame whose interval centre is nearest
  the output interval centre (ties round up). Using interval centres makes the pick symmetric in
  time, so a centred window really is centred. A source slower than the target rate repeats frames.
* ``"official"``: ``FlexARItemProcessor2.extract_frames_from_video`` of the official code:
  ``frame_step = int(src_fps / target_fps)``; the window ``[mid - (n*step)//2, +n*step)`` around
  ``mid = num_frames // 2`` (clipped to the clip), keeping frames whose absolute index is divisible
  by ``frame_step``. Because ``frame_step`` is truncated, 30 fps sources are sampled at 15 fps
  (step 2) while the tokens claim 12 fps, and 25 fps sources at 12.5 fps; 23.976 fps gets step 1.
  A source slower than the target has step 0 (the official code would divide by zero): ``low_fps``.
"""

from __future__ import annotations

import numpy as np

from .errors import LOW_FPS, TOO_SHORT, MediaError

SAMPLING_MODES = ("exact", "official")

# Clip lengths come from frame counts over float frame rates (29.97 = 30000/1001), so a clip of
# exactly the requested length can compute a hair shorter; this is far below one frame.
_DURATION_TOLERANCE_S = 1e-6


def num_target_frames(target_fps: float, duration: float) -> int:
    """Frames one clip yields: ``round(target_fps * duration)`` (Python rounding, as the official code)."""
    return round(target_fps * duration)


def sample_frame_indices(num_frames: int, src_fps: float, target_fps: float, duration: float,
                         mode: str = "exact", *, path: str = "") -> np.ndarray:
    """Source frame indices (int64, ascending, length ``round(target_fps*duration)``) for one clip.

    ``num_frames``/``src_fps`` describe the source; ``target_fps``/``duration`` the wanted clip;
    ``mode`` is ``"exact"`` or ``"official"`` (see module docstring). ``path`` only names the file
    in errors. Raises ``MediaError(reason="too_short")`` when the clip is shorter than ``duration``
    and, in official mode, ``MediaError(reason="low_fps")`` when ``src_fps < target_fps``.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {SAMPLING_MODES}")
    if num_frames <= 0 or not src_fps > 0:
        raise ValueError(f"source must have frames and a positive fps, got num_frames={num_frames}, "
                         f"src_fps={src_fps} for {path or 'this clip'}")
    if not target_fps > 0 or not duration > 0:
        raise ValueError(f"target_fps and duration must be positive, got {target_fps} and {duration}")
    clip_seconds = num_frames / src_fps
    # The official rule compares strictly (``total_frames / fps < duration``); "exact" forgives
    # float noise so that a clip of exactly ``duration`` seconds always qualifies.
    tolerance = _DURATION_TOLERANCE_S if mode == "exact" else 0.0
    if clip_seconds + tolerance < duration:
        raise MediaError(path, TOO_SHORT, f"{clip_seconds:.3f} s ({num_frames} frames at "
                                          f"{src_fps:.3f} fps) < required {duration} s")
    count = num_target_frames(target_fps, duration)
    if count < 1:
        raise ValueError(f"target_fps * duration = {target_fps * duration} rounds to 0 frames")
    if mode == "exact":
        return _exact_indices(num_frames, src_fps, target_fps, duration, count)
    return _official_indices(num_frames, src_fps, target_fps, count, path)


def _exact_indices(num_frames: int, src_fps: float, target_fps: float, duration: float,
                   count: int) -> np.ndarray:
    """Nearest source frame (by interval centre) to each output frame of a centred window."""
    window_start_s = (num_frames / src_fps - duration) / 2.0
    centres_s = window_start_s + (np.arange(count, dtype=np.float64) + 0.5) / target_fps
    # Source frame i has its centre at (i + 0.5) / src_fps; invert and round half up.
    position = centres_s * src_fps - 0.5
    indices = np.floor(position + 0.5).astype(np.int64)
    return np.clip(indices, 0, num_frames - 1)


def _official_indices(num_frames: int, src_fps: float, target_fps: float, count: int,
                      path: str) -> np.ndarray:
    """The official window arithmetic, including its truncated ``frame_step``."""
    frame_step = int(src_fps / target_fps)
    if frame_step == 0:
        raise MediaError(path, LOW_FPS, f"source {src_fps:.3f} fps < target {target_fps} fps")
    middle = num_frames // 2
    start = middle - (count * frame_step) // 2
    end = start + count * frame_step
    start, end = max(0, start), min(num_frames, end)
    # First multiple of frame_step at or after start; the official loop keeps exactly these.
    first = -(-start // frame_step) * frame_step
    indices = np.arange(first, end, frame_step, dtype=np.int64)[:count]
    if indices.size < count:
        # Only reachable when the centred window is clipped by the clip's ends.
        raise MediaError(path, TOO_SHORT, f"official window [{start}, {end}) with frame_step "
                                          f"{frame_step} holds {indices.size} < {count} frames")
    return indices
