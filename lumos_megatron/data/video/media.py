"""Media file -> cropped training frames: the whole "media -> frames" half of docs/method.md §7 item 3.

Videos: probe -> frame indices (:mod:`.sampling`) -> decode (:mod:`.readers`) -> one crop size
chosen from the first frame, applied to every frame (:mod:`.crop`). Images (by extension, or any
file PIL identifies as a still image) take the same crop path as a 1-frame video with
``fps = duration = 1``, whatever ``fps``/``duration`` were asked for, as the official image runs.

``resolution`` is the official ``target_size``: the candidate crops have at most
``(resolution // 32) ** 2`` patches of 32 px. 16:9 sources land on 448x256 with 352 and on
672x384 with 512 or 528 (the two give the same list); 256 gives 320x192.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from .crop import crop_frames, crop_sizes_for
from .errors import CORRUPT, MediaError
from .readers import AUTO, check_file, probe, read_frames_with
from .sampling import sample_frame_indices

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
# Never sniffed with PIL: these are containers even if PIL could read a frame of some of them.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg",
                              ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".ogv", ".ivf", ".h264"})
ALPHA_MODES = ("white", "drop")


@dataclass(frozen=True)
class LoadedMedia:
    """Training frames of one media file, ready for the video tokenizer.

    ``frames``: uint8 [T, H, W, 3] RGB at the crop size; ``fps``/``duration``: what the token
    prefix will claim (the requested values; 1 and 1 for images; with ``sampling="official"`` a
    30 fps source is really sampled at 15 fps while ``fps`` stays 12, as in the official data);
    ``width``/``height``: the crop size; ``source_fps``: the file's frame rate (None for images);
    ``backend``: ``dali_gpu``/``dali_cpu``/``pyav`` or ``pil`` for images; ``frame_indices``:
    the source frames used (presentation order).
    """

    path: str
    frames: np.ndarray
    fps: float
    duration: float
    width: int
    height: int
    source_fps: Optional[float]
    backend: str
    is_image: bool
    frame_indices: np.ndarray


def is_image_path(path: str) -> bool:
    """True for still images: a known image extension, or an unknown one that PIL identifies."""
    extension = os.path.splitext(str(path))[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return True
    if extension in VIDEO_EXTENSIONS:
        return False
    try:
        with Image.open(path) as image:  # reads the header only
            return not getattr(image, "is_animated", False)
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def whiten_transparency(image: Image.Image) -> Image.Image:
    """RGB version of ``image`` with any transparency composited on white (the Cosmos encoder rule).

    Pixel = ``uint8((1 - a) * 255 + a * rgb)`` with ``a = alpha / 255`` (truncated, as the
    official ``_whiten_transparency``); images without transparent pixels are only converted.
    """
    if image.mode == "RGB":
        return image
    rgba = np.array(image.convert("RGBA"))
    if not (rgba[:, :, 3] < 255).any():
        return image.convert("RGB")
    alpha = rgba[:, :, 3:4] / 255.0
    blended = (1 - alpha) * 255 + alpha * rgba[:, :, :3]
    return Image.fromarray(blended.astype(np.uint8), "RGB")


def load_image(path: str, alpha: str = "drop") -> np.ndarray:
    """One still image as uint8 [1, H, W, 3] RGB.

    ``alpha="drop"`` (default) is the official behaviour: ``extract_image`` calls
    ``convert("RGB")``, which discards alpha before the Cosmos encoder's white compositing could
    apply; ``alpha="white"`` composites transparency on white instead. Raises ``MediaError`` missing/empty/corrupt.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"unknown alpha mode {alpha!r}; expected one of {ALPHA_MODES}")
    check_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            rgb = whiten_transparency(image) if alpha == "white" else image.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)[None].copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(path, CORRUPT, f"cannot read image: {exc}") from exc


def load_media(path: str, *, fps: float, duration: float, resolution: int, sampling: str = "exact",
               backend: str = AUTO, alpha: str = "drop") -> LoadedMedia:
    """Decode, sample and crop one image or video into :class:`LoadedMedia`.

    ``fps``/``duration``: the clip to cut (e.g. 12 and 7, docs/method.md §7); ``resolution``: the crop-list
    ``target_size`` (module docstring); ``sampling``: ``"exact"`` or ``"official"``
    (:mod:`.sampling`); ``backend``: ``"auto"``, ``"dali_gpu"``, ``"dali_cpu"`` or ``"pyav"``
    (ignored for images, which PIL reads); ``alpha``: see :func:`load_image`.
    Raises ``MediaError`` with a contract reason for every file that must be skipped.
    """
    path = str(path)
    crop_sizes = crop_sizes_for(resolution)
    check_file(path)
    if is_image_path(path):
        frames = crop_frames(load_image(path, alpha), crop_sizes)
        return LoadedMedia(path=path, frames=frames, fps=1, duration=1, width=frames.shape[2],
                           height=frames.shape[1], source_fps=None, backend="pil", is_image=True,
                           frame_indices=np.zeros(1, dtype=np.int64))
    info = probe(path)
    indices = sample_frame_indices(info.num_frames, info.fps, fps, duration, sampling, path=path)
    decoded, used = read_frames_with(path, indices, backend, info)
    frames = crop_frames(decoded, crop_sizes)
    return LoadedMedia(path=path, frames=frames, fps=fps, duration=duration, width=frames.shape[2],
                       height=frames.shape[1], source_fps=info.fps, backend=used, is_image=False,
                       frame_indices=indices)
