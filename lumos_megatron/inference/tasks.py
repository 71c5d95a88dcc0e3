"""T2I / T2V / I2V: frame sizes, prompts and the I2V conditioning frame (docs/method.md §5.1).

* T2I: one latent frame at 448x256, "1 frames at 1 frames per second", guidance 16.
* T2V: ``fps · duration`` RGB frames (12 fps, 2 s: 7 latent frames with a 4x temporal tokenizer),
  guidance 15; the frame size from the official target sizes (352 → 448x256, 528 → 672x384,
  656 → 768x480) or ``WxH``.
* I2V: the image is cropped as at pre-tokenization (the resolution bucket closest to its aspect
  ratio), encoded by the video tokenizer as a one-frame video, and opens the video (cached clean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import torch

from lumos_megatron.tokenizers.text.base import TextTokenizer
from lumos_megatron.tokenizers.text.prompt import build_prompt_ids
from lumos_megatron.tokenizers.video.base import latent_frames_for
from lumos_megatron.inference.frame_decoding import frame_block
from lumos_megatron.vocab import LumosVocab, frame_block_length, parse_layout

Task = Literal["t2i", "t2v", "i2v"]
TASKS = ("t2i", "t2v", "i2v")


@dataclass(frozen=True)
class TaskDefaults:
    """Official settings of a task."""

    cfg_scale: float
    fps: int
    duration: int
    resolution: str


TASK_DEFAULTS = {
    "t2i": TaskDefaults(cfg_scale=16.0, fps=1, duration=1, resolution="448x256"),
    "t2v": TaskDefaults(cfg_scale=15.0, fps=12, duration=2, resolution="352"),
    "i2v": TaskDefaults(cfg_scale=15.0, fps=12, duration=2, resolution="352"),
}
_VIDEO_WRAPPER_TOKENS = 4
"""Tokens of a video around its frame blocks: the video start, duration, fps and video end."""
OFFICIAL_FRAME_SIZES = {352: (448, 256), 528: (672, 384), 656: (768, 480)}
"""T2V target size → (width, height) of the official inference dictionary."""


def frame_size(resolution: str) -> Tuple[int, int]:
    """``'WxH'`` (pixels, multiples of 32) or an official target size → (width, height)."""
    text = str(resolution).lower().strip()
    if "x" in text:
        try:
            width, height = (int(v) for v in text.split("x"))
        except ValueError:
            raise ValueError(f"resolution {resolution!r}: expected WxH, e.g. 448x256") from None
    elif text.isdigit() and int(text) in OFFICIAL_FRAME_SIZES:
        width, height = OFFICIAL_FRAME_SIZES[int(text)]
    elif text.isdigit():
        from lumos_megatron.data.video.crop import crop_sizes_for, select_crop_size

        width, height = select_crop_size(16, 9, crop_sizes_for(int(text)))  # a 16:9 frame
    else:
        raise ValueError(f"resolution {resolution!r}: expected WxH (e.g. 448x256) or a target size (352, 528)")
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise ValueError(f"resolution {width}x{height}: width and height must be positive multiples of 32")
    return width, height


def latent_grid(width: int, height: int, spatial_compression: int) -> Tuple[int, int]:
    """(H_l, W_l) of a frame of ``width`` x ``height`` pixels for a video tokenizer whose latent
    token covers ``spatial_compression`` pixels along each side (its ``spatial_compression``)."""
    return height // spatial_compression, width // spatial_compression


def latent_frame_count(task: Task, fps: int, duration: int, temporal_compression: int) -> int:
    """Latent frames of the whole video: 1 for T2I, otherwise the video tokenizer's count for
    ``fps · duration`` RGB frames (``latent_frames_for``: the first frame alone, then one latent
    frame per ``temporal_compression`` frames)."""
    if task == "t2i":
        return 1
    return latent_frames_for(fps * duration, temporal_compression)


def task_prompt_ids(caption: str, task: Task, width: int, height: int, fps: int, duration: int,
                    tokenizer: TextTokenizer, vocab: LumosVocab) -> List[int]:
    """``[0] + BPE(question) + [8710]`` with the official question text (docs/method.md §5.1)."""
    frames = 1 if task == "t2i" else fps * duration
    return build_prompt_ids(caption, width, height, tokenizer, vocab, frames=frames, fps=fps)


def conditioning_frame(image_path: str, resolution: str, video_tokenizer, vocab: LumosVocab
                       ) -> Tuple[List[int], Tuple[int, int]]:
    """The I2V frame block (8197 … 8196) of an image, and its (width, height) after the crop.

    ``resolution`` is a target size (crop to the closest-aspect bucket) or ``WxH`` (crop to that
    size). Raises ``MediaError`` for an unreadable image.
    """
    from lumos_megatron.data.video.crop import crop_frames, crop_sizes_for
    from lumos_megatron.data.video.media import load_image
    from lumos_megatron.data.video.readers import check_file

    check_file(image_path)
    text = str(resolution).lower()
    sizes = [frame_size(text)] if "x" in text else crop_sizes_for(int(text))
    frames = crop_frames(load_image(image_path), sizes)
    codes = video_tokenizer.encode(frames)[0]  # [H_l, W_l]
    return frame_block_of_codes(codes, vocab), (frames.shape[2], frames.shape[1])


def conditioning_frame_size(image_path: str, resolution: str) -> Optional[Tuple[int, int]]:
    """The (width, height) that ``conditioning_frame`` will crop ``image_path`` to, from the image
    header alone (no decoding); None when the file cannot be opened as an image."""
    from PIL import Image, UnidentifiedImageError

    from lumos_megatron.data.video.crop import crop_sizes_for, select_crop_size

    text = str(resolution).lower()
    if "x" in text:
        return frame_size(text)
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return select_crop_size(width, height, crop_sizes_for(int(text)))


def frame_block_of_codes(codes: torch.Tensor, vocab: LumosVocab) -> List[int]:
    """A complete frame block of a ``[H_l, W_l]`` code grid."""
    return frame_block(tuple(codes.shape), vocab.visual_id(codes.reshape(-1)), vocab)


def video_codes(tokens: List[int], vocab: LumosVocab) -> torch.Tensor:
    """The ``[T_l, H_l, W_l]`` codes of a generated token list (9004 … 9005)."""
    ids = torch.tensor(tokens, dtype=torch.long)
    frames = []
    for block in parse_layout(ids, vocab).frames:
        content = ids[block.content_start: block.content_end].view(block.rows, block.cols + 1)
        frames.append(vocab.code_of(content[:, : block.cols]))
    return torch.stack(frames)


def check_fits(grid: Optional[Tuple[int, int]], codebook_size: int, vocab: LumosVocab,
               max_positions: Optional[int] = None, prompt_length: int = 0, frames: int = 1) -> None:
    """Raise ValueError when a grid (None: not known yet) or a codebook cannot be expressed in the
    model's vocabulary, or the video would exceed ``max_positions``."""
    if codebook_size > vocab.num_visual_codes:
        raise ValueError(f"the video tokenizer has {codebook_size} codes but the model only "
                         f"{vocab.num_visual_codes} visual ids (vocab_size {vocab.vocab_size})")
    if grid is None:
        return
    rows, cols = grid
    for n, what in ((rows, "height"), (cols, "width")):
        try:
            vocab.size_token_for_latents(n)
        except ValueError as err:
            raise ValueError(f"latent {what} {n} cannot be written as a size token: {err}") from None
    length = prompt_length + _VIDEO_WRAPPER_TOKENS + frames * frame_block_length(rows, cols)
    if max_positions is not None and length > max_positions:
        raise ValueError(f"the video needs {length} tokens, more than the model's max_position_embeddings "
                         f"({max_positions})")
