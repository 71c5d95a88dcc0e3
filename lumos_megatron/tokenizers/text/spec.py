"""Text-tokenizer spec strings, as written in configs and on the command line.

* ``hf:PATH``  - an HF ``tokenizer.json`` (or a directory holding one); Chameleon's is detected
  automatically from its size and ``<reservedXXXXX>`` tokens;
* ``sp:PATH``  - a sentencepiece ``.model``;
* a bare ``PATH`` - by extension (``.json`` → HF, ``.model`` → sentencepiece) or, for a directory,
  by the file it holds (``tokenizer.json`` first, then ``tokenizer.model``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from lumos_megatron.vocab import LumosVocab

from .base import TextTokenizer
from .hf import HFTextTokenizer
from .sentencepiece_tokenizer import SentencePieceTextTokenizer

TokenizerSpec = Union[str, "os.PathLike[str]", TextTokenizer]


def load_text_tokenizer(spec: TokenizerSpec, vocab: LumosVocab) -> TextTokenizer:
    """The :class:`TextTokenizer` named by ``spec`` for ``vocab`` (an instance is returned as is).

    FileNotFoundError for a path that does not exist; ValueError for an empty spec or a file whose
    kind cannot be told from its name.
    """
    if isinstance(spec, TextTokenizer):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(
            f"text tokenizer spec must be a str or path, got {type(spec).__name__}; "
            f"use 'hf:PATH/tokenizer.json' or 'sp:PATH.model'"
        )
    text = os.fspath(spec).strip()
    if not text:
        raise ValueError(
            "text tokenizer spec is empty; use 'hf:PATH/tokenizer.json' or 'sp:PATH.model'"
        )
    kind, sep, rest = text.partition(":")
    if sep and kind in ("hf", "sp"):
        if not rest:
            raise ValueError(f"text tokenizer spec {text!r} names no path after '{kind}:'")
        cls = HFTextTokenizer if kind == "hf" else SentencePieceTextTokenizer
        return cls(rest, vocab)

    path = Path(text).expanduser()
    if path.is_dir():
        for name, cls in (
            ("tokenizer.json", HFTextTokenizer),
            ("tokenizer.model", SentencePieceTextTokenizer),
        ):
            if (path / name).is_file():
                return cls(path / name, vocab)
        raise FileNotFoundError(
            f"directory {path} holds neither tokenizer.json nor tokenizer.model; pass the file "
            f"itself as 'hf:PATH' or 'sp:PATH'"
        )
    if not path.exists():
        raise FileNotFoundError(
            f"text tokenizer {path} does not exist; pass an existing tokenizer.json or .model file"
        )
    if path.suffix == ".json":
        return HFTextTokenizer(path, vocab)
    if path.suffix == ".model":
        return SentencePieceTextTokenizer(path, vocab)
    raise ValueError(
        f"cannot tell the kind of text tokenizer {path} from its name; prefix it with 'hf:' "
        f"(tokenizer.json) or 'sp:' (sentencepiece .model)"
    )
