"""The Lumos-1 prompt (docs/method.md §1.2, §5.1): caption validation, the template text and its ids.

Training data stores the human turn with the frames/fps placeholders as their transient ids
(65539/65540); they are filled at training time (:func:`~.placeholders.fill_placeholders`) with
the frame count and fps chosen for the step, as the official pipeline does. Inference writes the
numbers directly in the text, as the official inference scripts do.
"""

from __future__ import annotations

from typing import Optional

from lumos_megatron.vocab import LumosVocab
from lumos_megatron.vocab.text_ids import reserved_text_ids

from .base import FPS_PLACEHOLDER, FRAMES_PLACEHOLDER, TRANSIENT_TOKENS, TextTokenizer

#: The official human-turn template (``pre_tokenize_vid_csv.py``); note the ``"\n "`` before the
#: caption. ``{resolution}`` is ``"{W}x{H}"`` (the resolution placeholder is filled at
#: pre-tokenization, so it never reaches the stored ids).
PROMPT_TEMPLATE = (
    "Generate a video with a resolution of {resolution}, consisting of {frames} frames at {fps} "
    "frames per second, according to the following prompt:\n {caption}"
)

#: Reason string that pre-tokenization reports for a rejected caption.
BAD_CAPTION = "bad_caption"


class CaptionError(ValueError):
    """A caption that cannot be used; ``reason`` is :data:`BAD_CAPTION`."""

    reason = BAD_CAPTION


def validate_caption(caption: object) -> str:
    """Return ``caption`` unchanged if usable, else raise :class:`CaptionError`.

    Usable: a str that is non-empty after stripping and holds none of the transient token strings
    (``<video_fps_placeholder>`` in a caption would be taken for the placeholder and replaced).
    """
    if not isinstance(caption, str):
        raise CaptionError(f"{BAD_CAPTION}: caption must be a str, got {type(caption).__name__}")
    if not caption.strip():
        raise CaptionError(f"{BAD_CAPTION}: caption is empty or whitespace only: {caption!r}")
    for token, _ in TRANSIENT_TOKENS:
        if token in caption:
            raise CaptionError(
                f"{BAD_CAPTION}: caption contains the reserved string {token!r}; remove it"
            )
    return caption


def _positive_int(value: object, what: str) -> int:
    """``value`` if it is a positive int (bool excluded), else ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def prompt_text(
    caption: str,
    width: int,
    height: int,
    frames: Optional[int] = None,
    fps: Optional[int] = None,
) -> str:
    """The human-turn text for a ``width`` x ``height`` video (pixels).

    With ``frames``/``fps`` None the placeholder strings are kept (training data); with both given
    the numbers are written in the text (inference). The caption is validated, never altered.
    """
    validate_caption(caption)
    _positive_int(width, "width")
    _positive_int(height, "height")
    if (frames is None) != (fps is None):
        raise ValueError(f"give both frames and fps or neither, got frames={frames!r}, fps={fps!r}")
    if frames is None:
        frames_text, fps_text = FRAMES_PLACEHOLDER, FPS_PLACEHOLDER
    else:
        frames_text = str(_positive_int(frames, "frames"))
        fps_text = str(_positive_int(fps, "fps"))
    return PROMPT_TEMPLATE.format(
        resolution=f"{width}x{height}", frames=frames_text, fps=fps_text, caption=caption
    )


def build_prompt_ids(
    caption: str,
    width: int,
    height: int,
    tokenizer: TextTokenizer,
    vocab: LumosVocab,
    frames: Optional[int] = None,
    fps: Optional[int] = None,
) -> list[int]:
    """Human-turn ids up to and including the separator: ``[BOS] + encode(text) + [sep]``.

    ``text`` is :func:`prompt_text`; without ``frames``/``fps`` the frames and fps placeholders stay
    as their ids (65539/65540 officially). Raises :class:`CaptionError` (reason ``bad_caption``)
    for an unusable caption, including one whose encoding holds a reserved structural id (e.g. a
    literal ``<reserved09000>`` with Chameleon's tokenizer, which would open a fake video).
    """
    text_ids = tokenizer.encode(prompt_text(caption, width, height, frames=frames, fps=fps))
    reserved = set(reserved_text_ids(vocab))
    hit = next((t for t in text_ids if t in reserved), None)
    if hit is not None:
        raise CaptionError(
            f"{BAD_CAPTION}: prompt text encodes to reserved token id {hit} with tokenizer "
            f"{tokenizer.name}; remove special-token strings from the caption"
        )
    return [vocab.bos] + text_ids + [vocab.separator]
