"""Lumos-1 vocabulary (the only place that knows token ids) and sample layout builder/parser."""

from .layout import (
    FrameBlock,
    VideoLayout,
    build_video_sample,
    frame_block_length,
    video_sample_length,
    parse_batch,
    parse_layout,
    unconditional,
)
from .vocab import IGNORE_INDEX, LumosVocab

__all__ = [
    "IGNORE_INDEX",
    "LumosVocab",
    "FrameBlock",
    "VideoLayout",
    "build_video_sample",
    "frame_block_length",
    "video_sample_length",
    "parse_batch",
    "parse_layout",
    "unconditional",
]
