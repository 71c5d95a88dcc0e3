"""Sentencepiece text tokenizers: loading a ``.model`` and training a small one from captions.

For users without Chameleon's tokenizer.json (and for tests): the piece ids are placed into the
Lumos text range by the vocabulary's :class:`~lumos_megatron.vocab.text_ids.TextIdMap`, transient
strings (``<video_frames_placeholder>``, ...) are split out before encoding and become their
transient ids, and numbers are the model's own encoding of the decimal string.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Union

import sentencepiece

from lumos_megatron.vocab import LumosVocab

from .base import IdTranslator, TextTokenizer, split_transient, transient_ids
from .prompt import prompt_text


def train_sentencepiece(
    captions: Iterable[str],
    output_prefix: Union[str, Path],
    vocab_size: int,
    model_type: str = "bpe",
    include_prompt_template: bool = True,
) -> Path:
    """Train sentencepiece on ``captions``, write ``{output_prefix}.model`` and return its path.

    Deterministic: a single thread, no sampling or shuffling of the input, so the same captions in
    the same order give a byte-identical model. ``vocab_size`` is an upper bound (small corpora
    yield fewer pieces rather than an error). Digits are split one per piece, like Chameleon's BPE.
    With ``include_prompt_template`` the fixed Lumos prompt sentence is added to the corpus once,
    so its words are never unknown. The model is written to a temporary name, then renamed.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    corpus = [c for c in captions if isinstance(c, str) and c.strip()]
    if not corpus:
        raise ValueError("train_sentencepiece needs at least one non-empty caption string")
    if include_prompt_template:
        corpus.append(prompt_text("a", 448, 256, frames=24, fps=12))
    out = Path(f"{output_prefix}.model").expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        split_digits=True,
        hard_vocab_limit=False,
        # Lumos adds its own BOS and never uses EOS, so the model reserves neither.
        bos_id=-1,
        eos_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out)
    return out


class SentencePieceTextTokenizer(TextTokenizer):
    """A sentencepiece ``.model`` producing Lumos text ids (see the module docstring)."""

    def __init__(self, path: Union[str, Path], vocab: LumosVocab) -> None:
        """Load ``path`` for ``vocab``; FileNotFoundError if missing, ValueError if unreadable or
        too large for the Lumos text range."""
        self._path = Path(path).expanduser()
        if not self._path.is_file():
            raise FileNotFoundError(
                f"sentencepiece model {self._path} does not exist: pass a .model file (train one "
                f"with lumos_megatron.tokenizers.text.train_sentencepiece)"
            )
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(self._path))
        except Exception as exc:  # sentencepiece raises OSError/RuntimeError on bad protos
            raise ValueError(f"cannot load sentencepiece model {self._path}: {exc}") from exc
        self._transient = transient_ids(vocab)
        self._ids = IdTranslator(vocab, self._sp.get_piece_size(), identity=False)

    @property
    def name(self) -> str:
        """``"sp:<file name>"``."""
        return f"sp:{self._path.name}"

    @property
    def path(self) -> Path:
        """The .model file."""
        return self._path

    @property
    def vocab_size(self) -> int:
        """Number of pieces of the model."""
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Lumos ids of ``text`` (no BOS); each piece between transient strings is encoded alone."""
        if not isinstance(text, str):
            raise ValueError(f"text to encode must be a str, got {type(text).__name__}")
        out: list[int] = []
        for piece, is_transient in split_transient(text):
            if is_transient:
                out.append(self._transient[piece])
            else:
                out.extend(self._ids.to_lumos(self._sp.encode(piece, out_type=int)))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of Lumos ids (reserved ids skipped, transient ids as strings, space-joined)."""
        parts = [
            self._sp.decode(run) if transient is None else transient
            for run, transient in self._ids.to_raw_segments(ids)
        ]
        # Each text piece was encoded alone (sentencepiece drops its edge spaces), so pieces are
        # re-joined with one space.
        return " ".join(p for p in parts if p)
