"""Writing generated frames: MP4 (H.264 through PyAV), GIF and the first frame as PNG.

Each file is written under a temporary name and renamed, so an interrupted run never leaves a
truncated file that a re-run would take for a finished one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


def _atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_mp4(frames: np.ndarray, path: str | Path, fps: int) -> None:
    """uint8 ``[T, H, W, 3]`` → H.264 (yuv420p) MP4 at ``fps``."""
    import av

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    _atomically(Path(path), write)


def write_gif(frames: np.ndarray, path: str | Path, fps: int) -> None:
    """uint8 ``[T, H, W, 3]`` → looping GIF at ``fps``."""
    images = [Image.fromarray(f) for f in frames]

    def write(tmp: Path) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, round(1000 / max(fps, 1))), loop=0)

    _atomically(Path(path), write)


def write_png(frame: np.ndarray, path: str | Path) -> None:
    """uint8 ``[H, W, 3]`` → PNG."""
    _atomically(Path(path), lambda tmp: Image.fromarray(frame).save(tmp, format="PNG"))
