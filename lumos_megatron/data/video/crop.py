"""Resolution buckets and the deterministic centre crop of Lumina-mGPT / Lumos-1, reproduced with PIL.

* :func:`generate_crop_size_list` walks a staircase of (w, h) patch counts from (N, 1) towards
  (1, N), keeping every step with ``w*h <= N`` and aspect ratio ``<= max_ratio``; sizes are in pixels.
* :func:`select_crop_size` is ``var_center_crop(..., use_random_center_crop=False, random_top_k=1)``:
  the candidate with the largest ``min(cw/w, ch/h) / max(cw/w, ch/h)`` (the closest aspect ratio);
  exact ties go to the larger ``(cw, ch)`` tuple because the official code sorts
  ``(score, size)`` pairs in reverse and takes the first.
* :func:`center_crop`: while both sides are at least twice the crop, BOX-downsample by 2 (floor);
  then BICUBIC-resize by ``max(cw/w, ch/h)`` with Python-``round``-ed sides; then crop at
  ``((W - cw) // 2, (H - ch) // 2)``.

``crop_sizes_for(target_size)`` uses ``N = (target_size // 32) ** 2``: 352 gives N = 121 (a 16:9
source lands on 448x256), 512 and 528 both give N = 256 (16:9 lands on 672x384), 256 gives N = 64.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

PATCH_SIZE = 32
MAX_ASPECT_RATIO = 4.0

CropSize = Tuple[int, int]  # (width, height) in pixels, as PIL sizes are


def generate_crop_size_list(num_patches: int, patch_size: int = PATCH_SIZE,
                            max_ratio: float = MAX_ASPECT_RATIO) -> List[CropSize]:
    """Candidate (width, height) crops: patch grids with ``w*h <= num_patches`` and ratio ``<= max_ratio``.

    Ordered from the widest to the tallest, exactly as the official list (its order decides nothing
    in selection, which sorts, but it is what users see logged).
    """
    if max_ratio < 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    if num_patches < 1 or patch_size < 1:
        raise ValueError(f"num_patches and patch_size must be positive, got {num_patches}, {patch_size}")
    sizes = []
    width_patches, height_patches = num_patches, 1
    while width_patches > 0:
        if max(width_patches, height_patches) / min(width_patches, height_patches) <= max_ratio:
            sizes.append((width_patches * patch_size, height_patches * patch_size))
        # Grow the height while the area allows it, otherwise narrow the width: the staircase.
        if (height_patches + 1) * width_patches <= num_patches:
            height_patches += 1
        else:
            width_patches -= 1
    return sizes


@lru_cache(maxsize=None)
def crop_sizes_for(target_size: int, patch_size: int = PATCH_SIZE,
                   max_ratio: float = MAX_ASPECT_RATIO) -> Tuple[CropSize, ...]:
    """The official candidate list for a ``target_size``: ``N = (target_size // patch_size) ** 2``."""
    if target_size < patch_size:
        raise ValueError(f"resolution {target_size} is smaller than one {patch_size}-px patch; "
                         f"use e.g. 256, 352 (448x256 for 16:9) or 528 (672x384 for 16:9)")
    return tuple(generate_crop_size_list((target_size // patch_size) ** 2, patch_size, max_ratio))


def aspect_score(width: int, height: int, crop_size: CropSize) -> float:
    """How well ``crop_size`` matches the image's aspect ratio (1.0 = identical), the official formula."""
    crop_w, crop_h = crop_size
    return min(crop_w / width, crop_h / height) / max(crop_w / width, crop_h / height)


def select_crop_size(width: int, height: int, crop_sizes: Sequence[CropSize]) -> CropSize:
    """The crop for a ``width`` x ``height`` image: best :func:`aspect_score`, ties to the larger size."""
    if not crop_sizes:
        raise ValueError("crop_sizes is empty; build it with crop_sizes_for(resolution)")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return max((aspect_score(width, height, size), tuple(size)) for size in crop_sizes)[1]


def center_crop(image: Image.Image, crop_size: CropSize) -> Image.Image:
    """Official deterministic ``center_crop``: BOX halvings, BICUBIC scale-to-cover, centre crop."""
    crop_w, crop_h = crop_size
    while image.size[0] >= 2 * crop_w and image.size[1] >= 2 * crop_h:
        image = image.resize((image.size[0] // 2, image.size[1] // 2), resample=Image.BOX)
    scale = max(crop_w / image.size[0], crop_h / image.size[1])
    # Python's round (half to even) on purpose: it is what the official code does.
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    left = (image.size[0] - crop_w) // 2
    top = (image.size[1] - crop_h) // 2
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    if cropped.size != (crop_w, crop_h) or left < 0 or top < 0:
        raise AssertionError(f"center_crop produced {cropped.size} from {image.size}, wanted {crop_size}")
    return cropped


def var_center_crop(image: Image.Image, crop_sizes: Sequence[CropSize]) -> Image.Image:
    """Pick the closest-aspect crop for ``image`` and apply :func:`center_crop` (no randomness)."""
    return center_crop(image, select_crop_size(image.size[0], image.size[1], crop_sizes))


def crop_frames(frames: Union[np.ndarray, Sequence[np.ndarray]],
                crop_sizes: Sequence[CropSize]) -> np.ndarray:
    """Crop/resize every frame of a clip ([T, H, W, 3] uint8 RGB) to one size chosen from frame 0.

    Returns uint8 [T, crop_h, crop_w, 3]. The official code re-selects per frame, which is the
    same thing because all frames of a video share one size; choosing once makes that explicit.
    """
    if len(frames) == 0:
        raise ValueError("crop_frames needs at least one frame")
    first = np.asarray(frames[0])
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got {first.dtype} {first.shape} per frame")
    height, width = first.shape[:2]
    crop_size = select_crop_size(width, height, crop_sizes)
    out = np.empty((len(frames), crop_size[1], crop_size[0], 3), dtype=np.uint8)
    for t, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.shape != first.shape:
            raise ValueError(f"frame {t} has shape {frame.shape}, frame 0 has {first.shape}")
        out[t] = np.asarray(center_crop(Image.fromarray(frame, "RGB"), crop_size))
    return out
