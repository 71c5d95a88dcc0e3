"""Text ids of the Lumos vocabulary: reserved structural ids, the foreign-tokenizer id map, numbers.

Lumos-1 uses the Chameleon BPE, whose ids *are* the Lumos text ids (docs/method.md §1.1). Any other text
tokenizer (a user's HF ``tokenizer.json`` or a sentencepiece model) has its own id space, which has
to be placed inside the Lumos text range ``[0, text_vocab_size)`` without ever producing an id the
vocabulary reserves for structure (BOS/pad, frame start/end, new-line, size tokens, separator, mask,
video start/end): a text token that landed on 9004 would open a fake video. :class:`TextIdMap` is
that placement, a bijection foreign id ↔ Lumos id that fills the free text ids in ascending order.

This module reads vocabulary fields only; :meth:`LumosVocab.text_id_map` is the public entry point
(the vocabulary object owns every id, the vocabulary contract).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Protocol, Sequence

import torch


class VocabIds(Protocol):
    """The vocabulary fields this module reads (``LumosVocab`` has them all). A protocol rather
    than an import of ``vocab.py``, which imports this module: no import circle."""

    bos: int
    pad: int
    frame_start: int
    frame_end: int
    new_line: int
    separator: int
    mask: int
    video_start: int
    video_end: int
    size_token_base: int
    num_size_tokens: int
    text_vocab_size: int

#: Size of the Chameleon text vocabulary (ids used as-is as Lumos text ids).
CHAMELEON_TEXT_VOCAB_SIZE = 65536

#: Chameleon id of the digit "0"; digit ``k`` is ``CHAMELEON_DIGIT_BASE + k`` (official
#: ``data/num2tokens.json``, which writes every number 0..999 one digit per token).
CHAMELEON_DIGIT_BASE = 16399


def chameleon_number_ids(n: int) -> list[int]:
    """Chameleon ids of the decimal number ``n``, one token per digit: 24 → [16401, 16403]."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"number {n!r} must be a non-negative int to be written in the prompt")
    return [CHAMELEON_DIGIT_BASE + int(d) for d in str(n)]


def reserved_text_ids(vocab: VocabIds) -> tuple[int, ...]:
    """Sorted text ids that no foreign text token may be mapped to.

    BOS/pad, frame start/end, new-line, every size token, separator, mask and video start/end.
    Chameleon's IMGIMG range (4..8195) is not reserved: Lumos-1 never emits those tokens.
    """
    ids = {
        vocab.bos,
        vocab.pad,
        vocab.frame_start,
        vocab.frame_end,
        vocab.new_line,
        vocab.separator,
        vocab.mask,
        vocab.video_start,
        vocab.video_end,
    }
    ids.update(range(vocab.size_token_base, vocab.size_token_base + vocab.num_size_tokens))
    return tuple(sorted(ids))


class TextIdMap:
    """Bijection between a foreign tokenizer's ids ``[0, tokenizer_size)`` and Lumos text ids.

    Foreign id ``i`` maps to the ``i``-th free (non-reserved) Lumos text id, so the map is
    monotonic and never yields a reserved id. Build it with :meth:`LumosVocab.text_id_map`.
    """

    def __init__(self, tokenizer_size: int, text_vocab_size: int, reserved: Sequence[int]) -> None:
        """Place ``tokenizer_size`` foreign ids into ``[0, text_vocab_size)`` minus ``reserved``."""
        if (
            isinstance(tokenizer_size, bool)
            or not isinstance(tokenizer_size, int)
            or tokenizer_size <= 0
        ):
            raise ValueError(f"tokenizer_size must be a positive int, got {tokenizer_size!r}")
        free = torch.ones(text_vocab_size, dtype=torch.bool)
        free[torch.as_tensor(list(reserved), dtype=torch.long)] = False
        free_ids = free.nonzero().flatten()
        if tokenizer_size > free_ids.numel():
            raise ValueError(
                f"text tokenizer has {tokenizer_size} ids but the Lumos text range [0, "
                f"{text_vocab_size}) has only {free_ids.numel()} ids left after the "
                f"{len(reserved)} reserved ones: use a tokenizer with at most {free_ids.numel()} "
                f"ids (e.g. train_sentencepiece(..., vocab_size={free_ids.numel()}))"
            )
        self._tokenizer_size = tokenizer_size
        self._text_vocab_size = text_vocab_size
        self._to_lumos = free_ids[:tokenizer_size].clone()
        # -1 marks Lumos text ids that no foreign id maps to (reserved or beyond the tokenizer).
        self._to_foreign = torch.full((text_vocab_size,), -1, dtype=torch.long)
        self._to_foreign[self._to_lumos] = torch.arange(tokenizer_size)

    @property
    def tokenizer_size(self) -> int:
        """Number of foreign ids covered by the map."""
        return self._tokenizer_size

    @property
    def text_vocab_size(self) -> int:
        """Size of the Lumos text range the ids are placed into."""
        return self._text_vocab_size

    def to_lumos(self, foreign_ids: Iterable[int]) -> list[int]:
        """Lumos text ids of foreign ids; ValueError naming the first id outside the tokenizer."""
        ids = torch.as_tensor(list(foreign_ids), dtype=torch.long)
        bad = (ids < 0) | (ids >= self._tokenizer_size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"foreign token id {int(ids[i])} at index {i} is outside the tokenizer's "
                f"[0, {self._tokenizer_size})"
            )
        return self._to_lumos[ids].tolist()

    def is_mapped(self, lumos_id: int) -> bool:
        """True if some foreign id maps to ``lumos_id``."""
        return 0 <= lumos_id < self._text_vocab_size and int(self._to_foreign[lumos_id]) >= 0

    def to_foreign(self, lumos_ids: Iterable[int]) -> list[int]:
        """Foreign ids of Lumos text ids; ValueError naming the first id no foreign id maps to."""
        ids = torch.as_tensor(list(lumos_ids), dtype=torch.long)
        inside = (ids >= 0) & (ids < self._text_vocab_size)
        out = torch.full_like(ids, -1)
        out[inside] = self._to_foreign[ids[inside]]
        if bool((out < 0).any()):
            i = int((out < 0).nonzero()[0])
            raise ValueError(
                f"Lumos id {int(ids[i])} at index {i} is not the image of any text token of this "
                f"tokenizer (reserved, visual, or beyond its {self._tokenizer_size} ids)"
            )
        return out.tolist()


@lru_cache(maxsize=16)
def _cached_map(tokenizer_size: int, text_vocab_size: int, reserved: tuple[int, ...]) -> TextIdMap:
    """Memoised :class:`TextIdMap` (one per tokenizer size and vocabulary layout)."""
    return TextIdMap(tokenizer_size, text_vocab_size, reserved)


def build_text_id_map(vocab: VocabIds, tokenizer_size: int) -> TextIdMap:
    """The :class:`TextIdMap` of a ``tokenizer_size``-id foreign tokenizer in ``vocab``."""
    # Checked before the cache, whose key would confuse True with 1.
    if (
        isinstance(tokenizer_size, bool)
        or not isinstance(tokenizer_size, int)
        or tokenizer_size <= 0
    ):
        raise ValueError(f"tokenizer_size must be a positive int, got {tokenizer_size!r}")
    return _cached_map(tokenizer_size, vocab.text_vocab_size, reserved_text_ids(vocab))
