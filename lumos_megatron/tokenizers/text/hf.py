"""HF ``tokenizer.json`` text tokenizers (the ``tokenizers`` library), Chameleon's included.

Chameleon's file (65,536 ids, ``<reserved08706>``-style tokens at their official ids) is detected
automatically. Its ids are the Lumos text ids, and numbers are written one digit per token
(digit k → 16399 + k, the official ``num2tokens.json``). Like the official text processor, the
five transient strings are added to the tokenizer as (non-special) added tokens, in the official
order, so they get ids 65536..65540 and are split out of the text before BPE, exactly as HF does in
the official pipeline.

Any other ``tokenizer.json`` has its ids placed into the Lumos text range by the vocabulary's
:class:`~lumos_megatron.vocab.text_ids.TextIdMap`; numbers are its encoding of the decimal string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import tokenizers  # HF tokenizers library (absolute import: not this package)

from lumos_megatron.vocab import LumosVocab
from lumos_megatron.vocab.text_ids import CHAMELEON_TEXT_VOCAB_SIZE, chameleon_number_ids

from .base import TRANSIENT_TOKENS, IdTranslator, TextTokenizer, transient_ids

#: Token strings at fixed ids that identify Chameleon's tokenizer.json (docs/method.md §1.1 table; the
#: ``<reservedXXXXX>`` token has id XXXXX + 4).
CHAMELEON_MARKERS: dict[str, int] = {
    "<s>": 0,
    "<eoss>": 8196,
    "<racm3:break>": 8197,
    "<reserved08706>": 8710,
    "<reserved08799>": 8803,
    "<reserved08800>": 8804,
    "<reserved08999>": 9003,
    "<reserved09000>": 9004,
    "<reserved09001>": 9005,
}

# LumosVocab field → the Chameleon id it must have for Chameleon ids to be usable unchanged.
_CHAMELEON_VOCAB_IDS = {
    "bos": 0,
    "frame_end": 8196,
    "frame_start": 8197,
    "separator": 8710,
    "new_line": 8803,
    "size_token_base": 8804,
    "mask": 9003,
    "video_start": 9004,
    "video_end": 9005,
    "text_vocab_size": CHAMELEON_TEXT_VOCAB_SIZE,
}


def resolve_tokenizer_json(path: Union[str, Path]) -> Path:
    """``path`` if it is a file, else ``path/tokenizer.json``; FileNotFoundError if neither."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(
            f"HF tokenizer file {p} does not exist: pass the path of a tokenizer.json (or of the "
            f"directory holding it), e.g. Chameleon's from Lumina-mGPT"
        )
    return p


def is_chameleon_tokenizer(tok: "tokenizers.Tokenizer", base_size: int) -> bool:
    """True if ``tok`` (with ``base_size`` ids before the transient tokens) is Chameleon's BPE."""
    if base_size != CHAMELEON_TEXT_VOCAB_SIZE:
        return False
    return all(tok.token_to_id(name) == tid for name, tid in CHAMELEON_MARKERS.items())


class HFTextTokenizer(TextTokenizer):
    """A ``tokenizer.json`` tokenizer producing Lumos text ids (see the module docstring)."""

    def __init__(self, path: Union[str, Path], vocab: LumosVocab) -> None:
        """Load ``path`` (a tokenizer.json or its directory) for ``vocab``.

        Raises FileNotFoundError for a missing file, ValueError for an unreadable file, a
        Chameleon file with a non-official vocabulary, or a tokenizer too large for the text range.
        """
        self._path = resolve_tokenizer_json(path)
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(self._path))
        except Exception as exc:  # the library raises a bare Exception on malformed JSON
            raise ValueError(
                f"cannot load HF tokenizer {self._path}: {exc}; expected a tokenizers-format "
                f"tokenizer.json"
            ) from exc
        self._tok.no_truncation()
        self._tok.no_padding()

        # Transient strings already in the file (e.g. saved after the official add_tokens) keep
        # their ids; the others are added now, one by one so their ids follow the official order.
        present = {s: self._tok.token_to_id(s) for s, _ in TRANSIENT_TOKENS}
        size_with_present = self._tok.get_vocab_size(with_added_tokens=True)
        base_size = size_with_present - sum(
            1 for tid in present.values() if tid is not None and tid >= CHAMELEON_TEXT_VOCAB_SIZE
        )
        self._chameleon = is_chameleon_tokenizer(self._tok, base_size)
        for s, _ in TRANSIENT_TOKENS:
            if present[s] is None:
                self._tok.add_tokens([s])
        lumos_of = transient_ids(vocab)
        transient_raw = {self._tok.token_to_id(s): lumos_of[s] for s, _ in TRANSIENT_TOKENS}

        if self._chameleon:
            wrong = {
                f: getattr(vocab, f)
                for f, want in _CHAMELEON_VOCAB_IDS.items()
                if getattr(vocab, f) != want
            }
            if wrong:
                raise ValueError(
                    f"{self._path} is Chameleon's tokenizer, whose ids are used unchanged, but the "
                    f"vocabulary differs from the official ids: {wrong}; use the default "
                    f"LumosVocab ids (docs/method.md §1.1)"
                )
            self._size = base_size
        else:
            self._size = size_with_present
        self._ids = IdTranslator(
            vocab, self._size, identity=self._chameleon, transient_raw=transient_raw
        )

    @property
    def name(self) -> str:
        """``"chameleon"`` for Chameleon's file, else ``"hf:<file name>"``."""
        return "chameleon" if self._chameleon else f"hf:{self._path.name}"

    @property
    def path(self) -> Path:
        """The tokenizer.json file."""
        return self._path

    @property
    def vocab_size(self) -> int:
        """Number of the file's own ids (65,536 for Chameleon), transient tokens excluded."""
        return self._size

    @property
    def is_chameleon(self) -> bool:
        """True for Chameleon's tokenizer.json (ids are Lumos text ids as they are)."""
        return self._chameleon

    def encode(self, text: str) -> list[int]:
        """Lumos ids of ``text`` (no BOS); HF splits at added tokens first, as the official code."""
        if not isinstance(text, str):
            raise ValueError(f"text to encode must be a str, got {type(text).__name__}")
        raw = self._tok.encode(text, add_special_tokens=False).ids
        return self._ids.to_lumos(raw)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of Lumos ids (reserved ids skipped, transient ids rendered as their strings)."""
        raw: list[int] = []
        for run, transient in self._ids.to_raw_segments(ids):
            if transient is None:
                raw.extend(run)
            else:
                raw.append(self._tok.token_to_id(transient))
        return self._tok.decode(raw, skip_special_tokens=False)

    def encode_number(self, n: int) -> list[int]:
        """Chameleon: one token per digit (16399 + k); other files: their encoding of ``str(n)``."""
        if self._chameleon:
            return chameleon_number_ids(n)
        return super().encode_number(n)
