"""Small tokenizer.json files built locally, for tests and quickstarts (nothing is downloaded).

* :func:`write_toy_bpe_tokenizer` trains a byte-level BPE on a few captions (a "foreign" tokenizer).
* :func:`write_chameleon_like_tokenizer` writes a word-level tokenizer.json with exactly Chameleon's
  65,536 ids and its special tokens at their official ids (``<s>`` = 0, ``<eoss>`` = 8196,
  ``<racm3:break>`` = 8197, ``<reservedXXXXX>`` = XXXXX + 4, digit k = 16399 + k), so the Chameleon
  code path (ids used as is, digit numbers, transient ids 65536..65540) runs without the real file.
  Its words are not Chameleon's BPE: only ids that the spec fixes are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import tokenizers  # HF tokenizers library (absolute import: not this package)
from tokenizers import decoders, models, pre_tokenizers, trainers

from lumos_megatron.vocab.text_ids import CHAMELEON_DIGIT_BASE, CHAMELEON_TEXT_VOCAB_SIZE

from .prompt import prompt_text

# First id of the Chameleon-like file's plain words (after digits at 16399..16408).
_WORD_BASE = 20000


def write_toy_bpe_tokenizer(
    captions: Iterable[str], path: Union[str, Path], vocab_size: int = 300
) -> Path:
    """Train a byte-level BPE tokenizer.json on ``captions`` and the prompt; return its path."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(captions) + [prompt_text("a", 448, 256, frames=24, fps=12)]
    tok.train_from_iterator(corpus, trainer=trainer)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out


def chameleon_like_vocab(words: Iterable[str]) -> dict[str, int]:
    """Token → id of the Chameleon-like file: specials at official ids, ``words`` from id 20000."""
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"IMGIMG{i:04d}Z": i for i in range(4, 8196)})
    vocab.update({"<eoss>": 8196, "<racm3:break>": 8197})
    vocab.update({f"<reserved{i - 4:05d}>": i for i in range(8198, 10000)})
    vocab.update({str(k): CHAMELEON_DIGIT_BASE + k for k in range(10)})
    next_id = _WORD_BASE
    for w in words:
        if w not in vocab:
            vocab[w] = next_id
            next_id += 1
    if next_id > CHAMELEON_TEXT_VOCAB_SIZE:
        raise ValueError(f"too many words for a Chameleon-like vocabulary ({next_id - _WORD_BASE})")
    taken = set(vocab.values())
    vocab.update({f"<filler{i}>": i for i in range(CHAMELEON_TEXT_VOCAB_SIZE) if i not in taken})
    return vocab


def _chameleon_like_pre_tokenizer() -> "pre_tokenizers.PreTokenizer":
    """Split at whitespace and punctuation, digits one per token."""
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )


def write_chameleon_like_tokenizer(texts: Iterable[str], path: Union[str, Path]) -> Path:
    """Write the Chameleon-like word-level tokenizer.json (module docstring); return its path.

    Its words are those of ``texts`` and of the prompt sentence; unknown words → ``<unk>``.
    """
    pre = _chameleon_like_pre_tokenizer()
    corpus = list(texts) + [prompt_text("a", 448, 256, frames=24, fps=12)]
    words = [w for text in corpus for w, _ in pre.pre_tokenize_str(text)]
    vocab = chameleon_like_vocab(words)
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    # Chameleon declares its control tokens as special added tokens, so their strings are
    # matched whole in text (e.g. "<reserved08706>" → 8710).
    specials = [t for t in vocab if t.startswith("<") and not t.startswith("<filler")]
    tok.add_special_tokens(specials)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return out
