"""PyAV (FFmpeg) side of decoding: container probing for every backend, and the CPU fallback decoder.

Frame index ``i`` means the i-th frame in presentation order (packets sorted by pts), counting from
the first frame of the first video stream; DALI uses the same convention, which the tests check.

To decode frames from the middle of a long clip without decoding everything before them, we demux
once (cheap: no decoding) to map pts -> presentation index and find the last keyframe at or before
the first wanted frame, seek there and decode forward (frames identified by pts). If packets lack
timestamps, or the seek does not deliver every wanted frame, we reopen the file and decode from the
start, counting output frames (needs no timestamps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import CORRUPT, EMPTY, MISSING, UNSUPPORTED_CODEC, MediaError


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream.

    ``codec`` is FFmpeg's canonical codec name (``h264``, ``hevc``, ``av1``, ``vp8``, ``vp9``,
    ``mjpeg``, ...; ``""`` when FFmpeg has no decoder for it); ``fps`` the average frame rate;
    ``num_frames`` the stream's frame count (demuxed packets when the container does not store
    it, e.g. WebM); ``duration`` = ``num_frames / fps`` seconds, the length the frame sampler
    (and the official code, ``total_frames / fps``) uses.
    """

    path: str
    codec: str
    fps: float
    num_frames: int
    width: int
    height: int
    duration: float


def check_file(path: str) -> None:
    """Raise ``MediaError`` ``missing`` (no such file) or ``empty`` (zero bytes) for ``path``."""
    if not os.path.isfile(path):
        raise MediaError(path, MISSING, "no such file")
    if os.path.getsize(path) == 0:
        raise MediaError(path, EMPTY, "0 bytes")


def _open(path: str):
    """Open ``path`` with PyAV, turning FFmpeg's open failures into ``MediaError(corrupt)``."""
    import av

    check_file(path)
    try:
        return av.open(path, mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(path, CORRUPT, f"cannot open container: {exc}") from exc


def _video_stream(container, path: str):
    if not container.streams.video:
        raise MediaError(path, CORRUPT, "no video stream in the container")
    return container.streams.video[0]


def _codec_name(stream) -> str:
    context = stream.codec_context
    if context is None or context.codec is None:
        return ""
    return context.codec.canonical_name


def _packet_table(container, stream) -> Tuple[List[Optional[int]], List[bool]]:
    """(pts, is_keyframe) of every real packet of ``stream``, in demux order; flush packets dropped."""
    pts, keyframe = [], []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        pts.append(packet.pts)
        keyframe.append(bool(packet.is_keyframe))
    return pts, keyframe


def probe(path: str) -> VideoInfo:
    """Codec, fps, frame count, size and duration of ``path``'s first video stream (PyAV metadata).

    Raises ``MediaError``: ``missing``/``empty``/``corrupt`` (cannot open, no video stream, no
    frames or no frame rate).
    """
    import av

    container = _open(path)
    try:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            # WebM/MKV and raw streams do not store a count: demux (no decoding) and count.
            num_frames = len(_packet_table(container, stream)[0])
        info = VideoInfo(path=str(path), codec=_codec_name(stream), fps=fps, num_frames=num_frames,
                         width=int(stream.codec_context.width or 0) if stream.codec_context else 0,
                         height=int(stream.codec_context.height or 0) if stream.codec_context else 0,
                         duration=num_frames / fps if fps > 0 else 0.0)
    except av.error.FFmpegError as exc:
        raise MediaError(path, CORRUPT, f"cannot read stream metadata: {exc}") from exc
    finally:
        container.close()
    if info.num_frames <= 0:
        raise MediaError(path, CORRUPT, "the video stream has no frames")
    if info.fps <= 0:
        raise MediaError(path, CORRUPT, "the video stream has no frame rate")
    return info


def _seek_plan(container, stream, first_wanted: int) -> Tuple[Optional[Dict[int, int]], Optional[int]]:
    """(pts -> presentation index, keyframe pts to seek to or None) for decoding from ``first_wanted``.

    Returns ``(None, None)`` when timestamps are missing or duplicated (then we count frames).
    """
    pts, keyframe = _packet_table(container, stream)
    if not pts or any(p is None for p in pts) or len(set(pts)) != len(pts):
        return None, None
    ordered = sorted(pts)
    index_of = {p: i for i, p in enumerate(ordered)}
    if first_wanted >= len(ordered):
        return index_of, None
    target = ordered[first_wanted]
    candidates = [p for p, key in zip(pts, keyframe) if key and p <= target]
    seek_pts = max(candidates) if candidates else None
    # Seeking to the very first frame gains nothing and exercises demuxer seeking for no reason.
    return index_of, (seek_pts if seek_pts is not None and seek_pts > ordered[0] else None)


def _decode_wanted(container, stream, wanted: Sequence[int],
                   index_of: Optional[Dict[int, int]]) -> Dict[int, np.ndarray]:
    """Decode forward from the current position, keeping the frames whose index is in ``wanted``.

    With ``index_of`` each frame's index comes from its pts, otherwise from counting (only valid
    when decoding starts at the first frame).
    """
    wanted_set, last = set(wanted), max(wanted)
    found: Dict[int, np.ndarray] = {}
    for count, frame in enumerate(container.decode(stream)):
        index = count if index_of is None else index_of.get(frame.pts, -1)
        if index in wanted_set and index not in found:
            found[index] = frame.to_ndarray(format="rgb24")
            if len(found) == len(wanted_set):
                break
        if index > last:
            break
    return found


def read_frames_pyav(path: str, indices: Sequence[int]) -> np.ndarray:
    """Decode frames ``indices`` (presentation order, any order/repeats) of ``path``: uint8 [T,H,W,3] RGB.

    Raises ``MediaError``: ``corrupt`` when the file cannot be decoded or ends before a requested
    frame, ``unsupported_codec`` when FFmpeg has no decoder for the stream.
    """
    import av

    indices = [int(i) for i in indices]
    wanted = sorted(set(indices))
    found: Dict[int, np.ndarray] = {}
    try:
        with _open(path) as container:
            stream = _prepare_stream(container, path)
            # Planning a seek costs a demux pass: only worth it when frame 0 is not wanted.
            index_of, seek_pts = _seek_plan(container, stream, wanted[0]) if wanted[0] > 0 else (None, None)
            if seek_pts is not None:
                container.seek(seek_pts, backward=True, any_frame=False, stream=stream)
                found = _decode_wanted(container, stream, wanted, index_of)
        if len(found) < len(wanted):
            # No seek worth doing, or it did not deliver every frame: count frames from the start
            # of a freshly opened file, which needs no timestamps at all.
            with _open(path) as container:
                found = _decode_wanted(container, _prepare_stream(container, path), wanted, None)
    except av.error.FFmpegError as exc:
        raise MediaError(path, CORRUPT, f"decoding failed: {exc}") from exc
    missing = [i for i in wanted if i not in found]
    if missing:
        raise MediaError(path, CORRUPT, f"stream ended before frame {missing[0]} "
                                        f"({len(missing)} of {len(wanted)} requested frames not decoded)")
    return np.stack([found[i] for i in indices])


def _prepare_stream(container, path: str):
    """The first video stream, checked to have a decoder, with FFmpeg's threading on."""
    stream = _video_stream(container, path)
    if not _codec_name(stream):
        raise MediaError(path, UNSUPPORTED_CODEC, "FFmpeg has no decoder for this stream")
    stream.thread_type = "AUTO"  # frame + slice threads: same frames, faster
    return stream
