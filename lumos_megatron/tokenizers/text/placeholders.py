"""Training-time step 1 (docs/method.md §4): write the frame count and fps into the stored prompt.

Pre-tokenized samples keep the frames/fps placeholders as transient ids (65539/65540). Those ids
are also visual codes 3 and 4, so they are looked for only before the first video start (9004),
as the official ``replace_with_multiple`` does; the video itself is never touched.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab
from lumos_megatron.vocab.layout import TokenSeq, as_token_ids
from lumos_megatron.vocab.text_ids import chameleon_number_ids, reserved_text_ids

NumberIds = Callable[[int], Sequence[int]]


def _number_tensor(n: int, what: str, number_ids: NumberIds, vocab: LumosVocab) -> torch.Tensor:
    """Ids of ``n`` from ``number_ids``, checked to be plain text ids of ``vocab``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n!r}")
    ids = [int(i) for i in number_ids(n)]
    reserved = set(reserved_text_ids(vocab))
    bad = [i for i in ids if not 0 <= i < vocab.text_vocab_size or i in reserved]
    if not ids or bad:
        raise ValueError(
            f"number_ids({n}) for {what} returned {ids}: expected at least one plain text id in "
            f"[0, {vocab.text_vocab_size}) that is not reserved; pass the tokenizer's encode_number"
        )
    return torch.tensor(ids, dtype=torch.long)


def fill_placeholders(
    tokens: TokenSeq,
    labels: Optional[TokenSeq],
    frames: int,
    fps: int,
    number_ids: Optional[NumberIds] = None,
    vocab: Optional[LumosVocab] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Replace the frames/fps placeholders before the first video start by the ids of the numbers.

    Returns new 1-D long ``(tokens, labels)``; every frames placeholder becomes
    ``number_ids(frames)`` and every fps placeholder ``number_ids(fps)``, with label -100 on the
    inserted ids, so the length grows by ``len(ids) - 1`` per placeholder. Only the part before the
    first ``vocab.video_start`` is searched (the whole sequence if it has none, e.g. a bare
    prompt). ``number_ids`` is the tokenizer's ``encode_number``; None means Chameleon's digit rule
    (24 → [16401, 16403]). ``labels`` may be None (then None is returned for it). A sample without
    placeholders comes back unchanged (as tensors, possibly the input objects themselves).
    """
    vocab = vocab if vocab is not None else LumosVocab()
    number_ids = number_ids if number_ids is not None else chameleon_number_ids
    tok = as_token_ids(tokens, "tokens")
    lab = None if labels is None else as_token_ids(labels, "labels")
    if lab is not None and lab.numel() != tok.numel():
        raise ValueError(f"labels length {lab.numel()} != tokens length {tok.numel()}")

    starts = (tok == vocab.video_start).nonzero()
    text_end = int(starts[0]) if starts.numel() else tok.numel()
    head = tok[:text_end]
    is_frames = head == vocab.frames_placeholder
    is_fps = head == vocab.fps_placeholder
    if not bool((is_frames | is_fps).any()):
        return tok, lab

    frames_ids = _number_tensor(frames, "frames", number_ids, vocab)
    fps_ids = _number_tensor(fps, "fps", number_ids, vocab)
    tok_parts: list[torch.Tensor] = []
    lab_parts: list[torch.Tensor] = []
    prev = 0
    for pos in (is_frames | is_fps).nonzero().flatten().tolist():
        ids = frames_ids if bool(is_frames[pos]) else fps_ids
        tok_parts += [tok[prev:pos], ids]
        if lab is not None:
            lab_parts += [lab[prev:pos], torch.full_like(ids, IGNORE_INDEX)]
        prev = pos + 1
    tok_parts.append(tok[prev:])
    new_tok = torch.cat(tok_parts)
    if lab is None:
        return new_tok, None
    lab_parts.append(lab[prev:])
    return new_tok, torch.cat(lab_parts)
