"""Lumos-1 training-sample layout: building samples and parsing/validating token sequences.

Layout of one sample (docs/method.md §1.2)::

    [BOS] text... 8710                                  human turn (labels -100)
    9004, 8804+duration, 8804+fps                       video prefix (labels = tokens from here on)
    T_l x ( 8197, 8804+H/32, 8804+W/32,                 frame start, height grid, width grid
            H_l x (W_l visual ids, 8803),               row-major latents + new-line per row
            8196 )                                      frame end
    9005, 8710                                          video end, end of assistant turn

:func:`parse_layout` is the single validator of this structure. MM-RoPE positions and the
frame-causal attention mask are both derived from its output, so every consumer agrees on where
frames are and rejects malformed input with the same error. Geometry always comes from the size
tokens (never from searching new-lines) because training/inference inputs may hold the mask id
at any content position, new-line columns included.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .vocab import IGNORE_INDEX, LumosVocab

TokenSeq = Union[torch.Tensor, Sequence[int]]


@dataclass(frozen=True)
class FrameBlock:
    """One ``8197 … 8196`` latent-frame block of a sequence (all indices are sequence positions).

    ``content_start``/``content_end`` delimit the H_l·(W_l+1) content tokens (codes + new-lines) as
    a half-open range, so ``content_end == end`` (the position of 8196).
    """

    index: int  # 0-based frame counter over the whole sequence
    start: int  # position of the frame-start token 8197
    end: int  # position of the frame-end token 8196
    height: int  # H_l, latent rows
    width: int  # W_l, latent columns (without the new-line column)
    content_start: int  # start + 3 (after 8197 and the two size tokens)
    content_end: int  # exclusive; == end

    @property
    def rows(self) -> int:
        """Alias of ``height`` (latent rows)."""
        return self.height

    @property
    def cols(self) -> int:
        """Alias of ``width`` (latent columns, new-line column excluded)."""
        return self.width

    @property
    def num_content(self) -> int:
        """Number of content tokens, H_l·(W_l+1) (new-lines included)."""
        return self.content_end - self.content_start


@dataclass(frozen=True)
class VideoLayout:
    """Parsed structure of one token sequence (see :func:`parse_layout`)."""

    length: int
    video_start: Optional[int]  # position of the first 9004, None if absent
    video_end: Optional[int]  # position of the first 9005, None if absent
    frames: tuple[FrameBlock, ...]
    p0: Optional[int]  # position of the first visual content token (first 8197 + 3); None if no frame

    @property
    def num_frames(self) -> int:
        """Number of frame blocks in the sequence."""
        return len(self.frames)


def frame_block_length(rows: int, cols: int) -> int:
    """Tokens of one latent frame block: ``8197, Hgrid, Wgrid``, ``rows`` rows of ``cols`` codes
    plus a new-line, ``8196`` (docs/method.md §1.2)."""
    return 3 + rows * (cols + 1) + 1


def video_sample_length(text_tokens: int, frames: int, rows: int, cols: int) -> int:
    """Tokens of a :func:`build_video_sample` sample: BOS, caption, separator, the 3-token video
    prefix, ``frames`` frame blocks of ``rows x cols`` latents, video end and the closing 8710."""
    return 1 + text_tokens + 1 + 3 + frames * frame_block_length(rows, cols) + 2


def as_token_ids(tokens: TokenSeq, what: str) -> torch.Tensor:
    """Convert a list/tensor of ids to a CPU 1-D long tensor; ValueError (naming ``what``) for
    non-integer or non-1-D input."""
    # An empty list would become a float tensor: it is an empty id list.
    t = torch.as_tensor(tokens, dtype=torch.long) if isinstance(tokens, (list, tuple)) and not tokens \
        else torch.as_tensor(tokens)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer ids, got dtype {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{what} must be 1-D, got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.long)


def _where(sample_index: Optional[int]) -> str:
    """Error-message prefix naming the sample, if known."""
    return "" if sample_index is None else f"sample {sample_index}: "


def build_video_sample(
    text_ids: TokenSeq,
    codes: torch.Tensor,
    duration: int,
    fps: int,
    vocab: LumosVocab,
    add_bos: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build ``(tokens, labels)`` (1-D long) for one text-to-video sample exactly as in docs/method.md §1.2.

    ``codes`` is ``[T_l, H_l, W_l]`` of raw codebook indices in ``[0, num_visual_codes)``; H_l and
    W_l must be multiples of ``vocab.latents_per_grid`` (4) because frame size tokens count 32-px
    units, height first. Labels are -100 for BOS, text and the first separator, and equal to the
    token for the whole assistant turn (9004 … 9005, 8710). Images are 1-frame videos with
    ``duration = fps = 1``.
    """
    text = as_token_ids(text_ids, "text_ids")
    # The frames/fps placeholders (above the text range) stay in stored prompts: they are filled
    # at training time, once the kept frame count is known (docs/method.md §4, step 1).
    placeholder = (text == vocab.frames_placeholder) | (text == vocab.fps_placeholder)
    bad = ((text < 0) | (text >= vocab.text_vocab_size)) & ~placeholder
    for sid in vocab.structural_ids:
        bad |= text == sid
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"text_ids[{i}] = {int(text[i])} is not a plain text id (outside [0, "
            f"{vocab.text_vocab_size}) or a frame/video delimiter)"
        )
    if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
        raise ValueError(
            f"codes must be a [T_l, H_l, W_l] tensor, got "
            f"{tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}"
        )
    n_frames, h_l, w_l = (int(s) for s in codes.shape)
    if n_frames < 1:
        raise ValueError("codes must contain at least one latent frame")
    h_tok = vocab.size_token_for_latents(h_l)
    w_tok = vocab.size_token_for_latents(w_l)
    vis = vocab.visual_id(codes)  # validates dtype and range

    # One frame block: [8197, Htok, Wtok] + rows of (W_l codes, new-line) + [8196].
    rows = torch.cat([vis, torch.full((n_frames, h_l, 1), vocab.new_line, dtype=torch.long)], dim=2)
    head = torch.tensor([vocab.frame_start, h_tok, w_tok], dtype=torch.long).expand(n_frames, 3)
    tail = torch.full((n_frames, 1), vocab.frame_end, dtype=torch.long)
    frames = torch.cat([head, rows.reshape(n_frames, -1), tail], dim=1).reshape(-1)

    human = torch.cat(
        [
            torch.tensor([vocab.bos] if add_bos else [], dtype=torch.long),
            text,
            torch.tensor([vocab.separator], dtype=torch.long),
        ]
    )
    assistant = torch.cat(
        [
            torch.tensor(
                [vocab.video_start, vocab.size_token(duration), vocab.size_token(fps)],
                dtype=torch.long,
            ),
            frames,
            torch.tensor([vocab.video_end, vocab.separator], dtype=torch.long),
        ]
    )
    tokens = torch.cat([human, assistant])
    labels = torch.cat([torch.full_like(human, IGNORE_INDEX), assistant.clone()])
    return tokens, labels


def unconditional(
    tokens: TokenSeq,
    labels: Optional[TokenSeq] = None,
    vocab: Optional[LumosVocab] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """CFG "text_only" drop: delete every token before the first video start (9004).

    Applied to ``tokens`` and, if given, ``labels`` (same length); returns ``(tokens, labels)``
    with ``labels`` None when not given. The result starts with ``9004, dur, fps`` (no BOS, no
    text), so its P0 is 6. ``vocab`` defaults to the official :class:`LumosVocab`; for convenience
    it may also be passed as the second positional argument.
    """
    if isinstance(labels, LumosVocab) and vocab is None:
        labels, vocab = None, labels
    vocab = vocab if vocab is not None else LumosVocab()
    tok = as_token_ids(tokens, "tokens")
    hits = (tok == vocab.video_start).nonzero()
    if hits.numel() == 0:
        raise ValueError(
            f"cannot build the unconditional sequence: no video start {vocab.video_start} in tokens"
        )
    first = int(hits[0])
    if labels is None:
        return tok[first:].clone(), None
    lab = as_token_ids(labels, "labels")
    if lab.numel() != tok.numel():
        raise ValueError(f"labels length {lab.numel()} != tokens length {tok.numel()}")
    return tok[first:].clone(), lab[first:].clone()


def _check_content(
    tok: torch.Tensor, frame: FrameBlock, vocab: LumosVocab, where: str
) -> None:
    """Validate a frame's content grid: code columns hold visual ids or the mask id, the last
    column holds the new-line or the mask id (training/inference may mask any content token)."""
    grid = tok[frame.content_start : frame.content_end].view(frame.height, frame.width + 1)
    is_mask = grid == vocab.mask
    bad_nl = ~(is_mask[:, -1] | (grid[:, -1] == vocab.new_line))
    if bool(bad_nl.any()):
        r = int(bad_nl.nonzero()[0])
        p = frame.content_start + r * (frame.width + 1) + frame.width
        raise ValueError(
            f"{where}row {r} of frame {frame.index} at position {p}: expected new-line "
            f"{vocab.new_line} (or mask {vocab.mask}), found {int(tok[p])}"
        )
    bad_code = ~(is_mask[:, :-1] | vocab.is_visual(grid[:, :-1]))
    if bool(bad_code.any()):
        r, c = (int(v) for v in bad_code.nonzero()[0])
        p = frame.content_start + r * (frame.width + 1) + c
        raise ValueError(
            f"{where}row {r}, column {c} of frame {frame.index} at position {p}: expected a visual "
            f"id (or mask {vocab.mask}), found {int(tok[p])}"
        )


def _read_size(tok: torch.Tensor, pos: int, what: str, frame_start: int, vocab: LumosVocab,
               where: str) -> int:
    """Read a frame size token at ``pos`` and return the latent extent it encodes."""
    value = int(tok[pos])
    if not vocab.is_size_token(value) or vocab.size_value(value) == 0:
        raise ValueError(
            f"{where}{what} token {value} at position {pos} of the frame starting at position "
            f"{frame_start} is not a valid size token [{vocab.size_token_base + 1}, "
            f"{vocab.size_token_base + vocab.num_size_tokens})"
        )
    return vocab.latents_from_size_token(value)


def parse_layout(
    tokens_1d: TokenSeq, vocab: LumosVocab, sample_index: Optional[int] = None
) -> VideoLayout:
    """Parse and validate the video/frame structure of one sequence (1-D ids, any device).

    Returns a :class:`VideoLayout` (video start/end, frame blocks with geometry read from the size
    tokens, P0). Raises ValueError naming the position (and ``sample_index`` if given) for: an
    unterminated frame block; a frame end without a frame start; size tokens outside the size range
    or disagreeing with the block length; content columns holding anything but visual ids /
    new-lines / the mask id; a frame outside the video when the sequence has both 9004 and 9005.
    Mask ids (9003) are accepted at every content position, new-line columns included.
    """
    if isinstance(tokens_1d, torch.Tensor) and tokens_1d.dim() == 2 and tokens_1d.shape[0] == 1:
        tokens_1d = tokens_1d[0]  # tolerate a batch of one
    tok = as_token_ids(tokens_1d, "tokens")
    where = _where(sample_index)
    n = tok.numel()
    starts = (tok == vocab.frame_start).nonzero().flatten().tolist()
    ends = (tok == vocab.frame_end).nonzero().flatten().tolist()
    vs_hits = (tok == vocab.video_start).nonzero().flatten()
    ve_hits = (tok == vocab.video_end).nonzero().flatten()
    video_start = int(vs_hits[0]) if vs_hits.numel() else None
    video_end = int(ve_hits[0]) if ve_hits.numel() else None
    has_video = video_start is not None and video_end is not None
    if has_video and video_end < video_start:
        raise ValueError(
            f"{where}video end {vocab.video_end} at position {video_end} precedes video start "
            f"{vocab.video_start} at position {video_start}"
        )

    frames: list[FrameBlock] = []
    for f, s in enumerate(starts):
        limit = starts[f + 1] if f + 1 < len(starts) else n
        # The matching frame end is the first 8196 after s and before the next 8197.
        k = bisect.bisect_right(ends, s)
        actual_end = ends[k] if k < len(ends) and ends[k] < limit else None
        if actual_end is None or s + 2 >= n:
            raise ValueError(
                f"{where}unterminated frame block: frame start {vocab.frame_start} at position {s} "
                f"has no frame end {vocab.frame_end} before "
                f"{'the next frame start at position ' + str(limit) if limit < n else 'the end of the sequence'}"
            )
        height = _read_size(tok, s + 1, "height", s, vocab, where)
        width = _read_size(tok, s + 2, "width", s, vocab, where)
        content_start = s + 3
        expected_end = s + frame_block_length(height, width) - 1
        if expected_end != actual_end:
            raise ValueError(
                f"{where}size tokens at positions {s + 1},{s + 2} of frame {f} (frame start at "
                f"position {s}) give {height}x{width} latents, so {height} rows of {width + 1} "
                f"tokens and the frame end at position {expected_end}, but the block ends at "
                f"position {actual_end}"
            )
        frame = FrameBlock(f, s, actual_end, height, width, content_start, actual_end)
        if has_video and not (video_start < s and actual_end < video_end):
            raise ValueError(
                f"{where}frame {f} (positions {s}..{actual_end}) lies outside the video "
                f"(video start at position {video_start}, video end at position {video_end})"
            )
        _check_content(tok, frame, vocab, where)
        frames.append(frame)

    matched = {fr.end for fr in frames}
    stray = [e for e in ends if e not in matched]
    if stray:
        raise ValueError(
            f"{where}frame end {vocab.frame_end} at position {stray[0]} has no matching frame start"
        )
    p0 = frames[0].content_start if frames else None
    return VideoLayout(n, video_start, video_end, tuple(frames), p0)


def parse_batch(tokens: torch.Tensor, vocab: LumosVocab) -> list[VideoLayout]:
    """Parse every sample of a ``[B, L]`` (or ``[L]``, treated as B = 1) token tensor.

    The tensor is copied to the CPU once so per-frame validation does not sync an accelerator.
    """
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [B, L] or [L], got shape {tuple(tokens.shape)}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must hold integer ids, got dtype {tokens.dtype}")
    cpu = tokens.detach().to("cpu", torch.long)
    return [parse_layout(cpu[b], vocab, sample_index=b) for b in range(cpu.shape[0])]
