"""The text-tokenizer interface and the id translation every implementation shares.

A :class:`TextTokenizer` turns text into **Lumos text ids** (never the tokenizer's own ids), so the
prompt builder and pre-tokenization do not care which tokenizer is behind it:

* the Chameleon BPE's ids are the Lumos text ids as they are (docs/method.md §1.1);
* any other tokenizer's ids go through the vocabulary's
  :class:`~lumos_megatron.vocab.text_ids.TextIdMap`.

The five transient strings of the official text processor (``<|image|>``, ``<|video|>`` and the
three ``<video_*_placeholder>`` strings) are recognised in any text and become the vocabulary's
transient ids (65536..65540), exactly as the official added tokens do.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Iterable, Mapping, Optional

from lumos_megatron.vocab import LumosVocab
from lumos_megatron.vocab.text_ids import reserved_text_ids

#: (string, LumosVocab field) of the transient tokens, in the order the official processor adds
#: them (media symbols first, then the placeholders), which gives Chameleon ids 65536..65540.
TRANSIENT_TOKENS: tuple[tuple[str, str], ...] = (
    ("<|image|>", "image_placeholder"),
    ("<|video|>", "video_placeholder"),
    ("<video_resolution_placeholder>", "resolution_placeholder"),
    ("<video_frames_placeholder>", "frames_placeholder"),
    ("<video_fps_placeholder>", "fps_placeholder"),
)

FRAMES_PLACEHOLDER = "<video_frames_placeholder>"
FPS_PLACEHOLDER = "<video_fps_placeholder>"
RESOLUTION_PLACEHOLDER = "<video_resolution_placeholder>"

_TRANSIENT_RE = re.compile("(" + "|".join(re.escape(s) for s, _ in TRANSIENT_TOKENS) + ")")


def transient_ids(vocab: LumosVocab) -> dict[str, int]:
    """Transient token string → its Lumos id in ``vocab`` (65536..65540 officially)."""
    return {text: getattr(vocab, field) for text, field in TRANSIENT_TOKENS}


def split_transient(text: str) -> list[tuple[str, bool]]:
    """Split ``text`` at transient strings: ``[(piece, is_transient), ...]``, no empty pieces."""
    return [(p, i % 2 == 1) for i, p in enumerate(_TRANSIENT_RE.split(text)) if p]


class IdTranslator:
    """Converts between a tokenizer's own ids and Lumos ids for one vocabulary.

    ``text_map`` is None when the tokenizer's ids already are Lumos text ids (Chameleon).
    ``transient_raw`` maps the tokenizer's ids of the transient strings (if it has them as added
    tokens) to the Lumos transient ids.
    """

    def __init__(
        self,
        vocab: LumosVocab,
        tokenizer_size: int,
        identity: bool,
        transient_raw: Optional[Mapping[int, int]] = None,
    ) -> None:
        """Build the translation; ValueError if a non-identity tokenizer does not fit the vocab."""
        self.vocab = vocab
        self.tokenizer_size = tokenizer_size
        self.text_map = None if identity else vocab.text_id_map(tokenizer_size)
        self._raw_to_transient = dict(transient_raw or {})
        self._reserved = frozenset(reserved_text_ids(vocab))
        self._transient_text = {v: k for k, v in transient_ids(vocab).items()}

    def to_lumos(self, raw_ids: Iterable[int]) -> list[int]:
        """Lumos ids of the tokenizer's ids (transient added tokens → transient ids)."""
        raw = list(raw_ids)
        out: list[int] = []
        plain: list[int] = []  # run of ordinary ids, translated in one vectorised call
        for r in raw:
            if r in self._raw_to_transient:
                out.extend(self._map_plain(plain))
                plain = []
                out.append(self._raw_to_transient[r])
            else:
                plain.append(r)
        out.extend(self._map_plain(plain))
        return out

    def _map_plain(self, raw: list[int]) -> list[int]:
        """Translate ordinary (non-transient) ids."""
        if not raw:
            return []
        if self.text_map is None:
            bad = [r for r in raw if not 0 <= r < self.tokenizer_size]
            if bad:
                raise ValueError(
                    f"token id {bad[0]} is outside the tokenizer's [0, {self.tokenizer_size})"
                )
            return list(raw)
        return self.text_map.to_lumos(raw)

    def to_raw_segments(self, lumos_ids: Iterable[int]) -> list[tuple[list[int], Optional[str]]]:
        """Split Lumos ids into ``(raw ids, None)`` text runs and ``([], string)`` transient tokens.

        Reserved structural ids (BOS, separator, ...) are dropped: they are not text. ValueError
        names the first id that is neither text of this tokenizer, transient nor reserved.
        """
        segments: list[tuple[list[int], Optional[str]]] = []
        run: list[int] = []
        for i, t in enumerate(int(x) for x in lumos_ids):
            if t in self._transient_text:
                if run:
                    segments.append((self._unmap(run, i), None))
                    run = []
                segments.append(([], self._transient_text[t]))
            elif t in self._reserved:
                continue
            else:
                run.append(t)
        if run:
            segments.append((self._unmap(run, None), None))
        return segments

    def _unmap(self, run: list[int], end: Optional[int]) -> list[int]:
        """Tokenizer ids of a run of Lumos text ids (``end`` only locates errors)."""
        if self.text_map is not None:
            return self.text_map.to_foreign(run)
        bad = [t for t in run if not 0 <= t < self.tokenizer_size]
        if bad:
            raise ValueError(
                f"Lumos id {bad[0]} is not a text id of this tokenizer [0, {self.tokenizer_size})"
                + ("" if end is None else f" (before index {end})")
            )
        return run


class TextTokenizer(ABC):
    """A text tokenizer producing Lumos text ids (see the module docstring)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name: ``"chameleon"``, ``"hf:tokenizer.json"``, ``"sp:x.model"``."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of the tokenizer's own ids (without the transient tokens)."""

    @property
    def is_chameleon(self) -> bool:
        """True when the tokenizer's ids are used as Lumos text ids unchanged (Chameleon BPE)."""
        return False

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Lumos ids of ``text``, no BOS (the layout adds it); transient strings → 65536..65540."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of Lumos ids; reserved structural ids skipped, transient ids as their strings."""

    def encode_number(self, n: int) -> list[int]:
        """Lumos ids of the number ``n`` as written in the prompt (default: its decimal string)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"number {n!r} must be a non-negative int to be written in the prompt")
        return self.encode(str(n))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size})"
