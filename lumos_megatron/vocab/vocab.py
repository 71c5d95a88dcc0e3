"""The Lumos-1 unified vocabulary: the one place in the code base that knows token ids.

Every other module (sequence layout, MM-RoPE, frame mask, losses, inference) asks a
:class:`LumosVocab` instead of hard-coding numbers, so that a small test vocabulary (e.g.
``vocab_size=65600``) or a re-based tokenizer only has to be described once.

Id conventions (docs/method.md §1.1):

* ids ``[0, text_vocab_size)`` are the Chameleon text vocabulary; all structural special tokens
  (BOS, frame start/end, new-line, size tokens, separator, mask, video start/end) live there;
* ids ``[visual_offset, vocab_size)`` are the visual codebook: code ``c`` ↔ id ``visual_offset + c``;
* size ("grid") tokens are ``size_token_base + n`` for ``0 <= n < num_size_tokens``; they encode frame
  height/width in units of ``grid_px`` pixels (height first), video duration in seconds and fps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Union

import torch

from .text_ids import TextIdMap, build_text_id_map

#: Label value that the loss ignores (PyTorch cross-entropy convention, used by the official labels).
IGNORE_INDEX = -100

IntOrTensor = Union[int, torch.Tensor]

# Names of the fields that are single special token ids; they must be distinct text ids.
_SPECIAL_FIELDS = (
    "bos",
    "frame_start",
    "frame_end",
    "new_line",
    "separator",
    "mask",
    "video_start",
    "video_end",
)

# Transient prompt placeholder fields; exempt from the special-id collision checks (see below).
_PLACEHOLDER_FIELDS = (
    "image_placeholder",
    "video_placeholder",
    "resolution_placeholder",
    "frames_placeholder",
    "fps_placeholder",
)


@dataclass(frozen=True)
class LumosVocab:
    """Token-id map of the Lumos-1 unified (text + Cosmos visual) vocabulary.

    All fields are keyword-overridable; defaults are the official ids (docs/method.md §1.1). The instance is
    frozen and validated on construction, so a vocabulary object that exists is always consistent.
    """

    vocab_size: int = 129536
    text_vocab_size: int = 65536
    visual_offset: int = 65536
    bos: int = 0
    pad: int = 0
    frame_start: int = 8197
    frame_end: int = 8196
    new_line: int = 8803
    size_token_base: int = 8804
    # 8804 + 199 = 9003 is the mask token, so at most 199 size values fit below it.
    num_size_tokens: int = 199
    separator: int = 8710
    mask: int = 9003
    video_start: int = 9004
    video_end: int = 9005
    # Size tokens count frame height/width in units of 32 px; one latent token covers 8 px.
    grid_px: int = 32
    latent_px: int = 8
    # Transient prompt ids (docs/method.md §1.1): the official text processor appends these five added tokens
    # after the 65,536 Chameleon ids, so they collide with visual codes 0..4 on purpose. They only
    # occur in pre-tokenized text before the first video start and are replaced before the model.
    image_placeholder: int = 65536
    video_placeholder: int = 65537
    resolution_placeholder: int = 65538
    frames_placeholder: int = 65539
    fps_placeholder: int = 65540

    def __post_init__(self) -> None:
        """Validate ranges and collisions; raise ValueError on an inconsistent vocabulary."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"LumosVocab.{f.name} must be an int, got {value!r}")
        if self.text_vocab_size <= 0:
            raise ValueError(f"text_vocab_size must be positive, got {self.text_vocab_size}")
        if self.visual_offset < self.text_vocab_size:
            raise ValueError(
                f"visual_offset ({self.visual_offset}) overlaps the text vocabulary "
                f"[0, {self.text_vocab_size})"
            )
        if self.vocab_size <= self.visual_offset:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) must exceed visual_offset ({self.visual_offset}): "
                f"the visual codebook size is vocab_size - visual_offset and must be >= 1"
            )
        if self.num_size_tokens <= 0:
            raise ValueError(f"num_size_tokens must be positive, got {self.num_size_tokens}")
        if self.grid_px <= 0 or self.latent_px <= 0 or self.grid_px % self.latent_px:
            raise ValueError(
                f"grid_px ({self.grid_px}) must be a positive multiple of latent_px ({self.latent_px})"
            )
        for name in _SPECIAL_FIELDS + ("pad",):
            tid = getattr(self, name)
            if not 0 <= tid < self.text_vocab_size:
                raise ValueError(
                    f"special id {name}={tid} is outside the text range [0, {self.text_vocab_size})"
                )
        size_lo, size_hi = self.size_token_base, self.size_token_base + self.num_size_tokens
        if size_lo < 0 or size_hi > self.text_vocab_size:
            raise ValueError(
                f"size tokens [{size_lo}, {size_hi}) do not fit in the text range "
                f"[0, {self.text_vocab_size})"
            )
        seen: dict[int, str] = {}
        for name in _SPECIAL_FIELDS:
            tid = getattr(self, name)
            if tid in seen:
                raise ValueError(f"special ids collide: {seen[tid]} and {name} are both {tid}")
            seen[tid] = name
            if size_lo <= tid < size_hi:
                raise ValueError(
                    f"special id {name}={tid} collides with the size-token range [{size_lo}, {size_hi})"
                )
        # pad may equal bos (official: both 0) but must not be a structural token, otherwise
        # right-padding would create fake frames / video boundaries.
        if self.pad != self.bos and self.pad in seen:
            raise ValueError(f"pad id {self.pad} collides with special id {seen[self.pad]}")
        # Placeholders may equal visual ids (they are transient) but never a text id, otherwise a
        # real text token would be taken for a placeholder and replaced.
        placeholders: dict[int, str] = {}
        for name in _PLACEHOLDER_FIELDS:
            pid = getattr(self, name)
            if pid < self.text_vocab_size:
                raise ValueError(
                    f"placeholder id {name}={pid} must be >= text_vocab_size "
                    f"({self.text_vocab_size}): ids below it are text ids"
                )
            if pid in placeholders:
                raise ValueError(
                    f"placeholder ids collide: {placeholders[pid]} and {name} are both {pid}"
                )
            placeholders[pid] = name

    # ------------------------------------------------------------------ visual codebook
    @property
    def num_visual_codes(self) -> int:
        """Size of the visual codebook (``vocab_size - visual_offset``; 64,000 officially)."""
        return self.vocab_size - self.visual_offset

    def is_visual(self, ids: IntOrTensor) -> IntOrTensor:
        """True where ``visual_offset <= id < vocab_size`` (bool tensor for a tensor, bool for an int)."""
        if isinstance(ids, torch.Tensor):
            return (ids >= self.visual_offset) & (ids < self.vocab_size)
        return self.visual_offset <= int(ids) < self.vocab_size

    def visual_id(self, code: IntOrTensor) -> IntOrTensor:
        """Map raw codebook indices ``[0, num_visual_codes)`` to token ids; ValueError if out of range."""
        if isinstance(code, torch.Tensor):
            if code.is_floating_point() or code.dtype == torch.bool:
                raise ValueError(f"visual codes must be an integer tensor, got dtype {code.dtype}")
            bad = (code < 0) | (code >= self.num_visual_codes)
            if bool(bad.any()):
                pos = tuple(int(i) for i in bad.nonzero()[0].tolist())
                raise ValueError(
                    f"visual code {int(code[pos])} at index {pos} is outside "
                    f"[0, {self.num_visual_codes})"
                )
            return code.long() + self.visual_offset
        if not 0 <= int(code) < self.num_visual_codes:
            raise ValueError(f"visual code {code} is outside [0, {self.num_visual_codes})")
        return int(code) + self.visual_offset

    def code_of(self, ids: IntOrTensor) -> IntOrTensor:
        """Inverse of :meth:`visual_id`; ValueError if an id is not a visual token."""
        if isinstance(ids, torch.Tensor):
            bad = ~self.is_visual(ids)
            if bool(bad.any()):
                pos = tuple(int(i) for i in bad.nonzero()[0].tolist())
                raise ValueError(
                    f"token {int(ids[pos])} at index {pos} is not a visual id "
                    f"[{self.visual_offset}, {self.vocab_size})"
                )
            return ids.long() - self.visual_offset
        if not self.is_visual(ids):
            raise ValueError(
                f"token {ids} is not a visual id [{self.visual_offset}, {self.vocab_size})"
            )
        return int(ids) - self.visual_offset

    # ------------------------------------------------------------------ size ("grid") tokens
    def size_token(self, n: int) -> int:
        """Token encoding the value ``n`` (grid units, seconds or fps): ``size_token_base + n``."""
        n = int(n)
        if not 0 <= n < self.num_size_tokens:
            raise ValueError(
                f"size value {n} is outside the representable range [0, {self.num_size_tokens})"
            )
        return self.size_token_base + n

    def is_size_token(self, ids: IntOrTensor) -> IntOrTensor:
        """True where ``ids`` is a size token (bool tensor for a tensor, bool for an int)."""
        lo, hi = self.size_token_base, self.size_token_base + self.num_size_tokens
        if isinstance(ids, torch.Tensor):
            return (ids >= lo) & (ids < hi)
        return lo <= int(ids) < hi

    def size_value(self, token: int) -> int:
        """Inverse of :meth:`size_token`; ValueError if ``token`` is not a size token."""
        if not self.is_size_token(token):
            raise ValueError(
                f"token {token} is not a size token [{self.size_token_base}, "
                f"{self.size_token_base + self.num_size_tokens})"
            )
        return int(token) - self.size_token_base

    @property
    def latents_per_grid(self) -> int:
        """Latent tokens per size-token unit (32 px / 8 px = 4 officially)."""
        return self.grid_px // self.latent_px

    def latents_from_size_token(self, token: int) -> int:
        """Latent rows/cols encoded by a frame size token: ``(token - base) * grid_px // latent_px``."""
        return self.size_value(token) * self.grid_px // self.latent_px

    def size_token_for_latents(self, n_latents: int) -> int:
        """Frame size token for ``n_latents`` latent rows/cols; must be a multiple of latents_per_grid."""
        n_latents = int(n_latents)
        if n_latents <= 0 or n_latents % self.latents_per_grid:
            raise ValueError(
                f"latent extent {n_latents} must be a positive multiple of {self.latents_per_grid} "
                f"(frames are sized in {self.grid_px}-px units of {self.latent_px}-px latents)"
            )
        return self.size_token(n_latents // self.latents_per_grid)

    # ------------------------------------------------------------------ misc
    @property
    def special_ids(self) -> dict[str, int]:
        """Name → id of every single-id special token (size tokens excluded)."""
        return {name: getattr(self, name) for name in _SPECIAL_FIELDS}

    @property
    def structural_ids(self) -> tuple[int, ...]:
        """Ids that delimit the video/frame structure and may therefore not appear in prompt text."""
        return (self.frame_start, self.frame_end, self.video_start, self.video_end)

    def text_id_map(self, tokenizer_size: int) -> TextIdMap:
        """Bijection between a foreign tokenizer's ids ``[0, tokenizer_size)`` and Lumos text ids.

        Foreign ids fill the free text ids in ascending order, skipping every reserved id
        (:func:`~lumos_megatron.vocab.text_ids.reserved_text_ids`); ValueError if the tokenizer
        has more ids than the text range can hold. The Chameleon tokenizer needs no map.
        """
        return build_text_id_map(self, tokenizer_size)
