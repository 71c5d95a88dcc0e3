"""Synthetic Lumos-layout video samples, generated deterministically from the sample index.

Each sample is a real official-layout sequence (BOS, caption ids, separator, video prefix, frame
blocks of random visual codes, video end) built by ``build_video_sample``, so everything
downstream (parser, MM-RoPE positions, frame-causal mask) runs on exactly what real data gives.
Sample ``i`` depends only on (seed, i): results do not depend on DP size, micro-batching or resume.
With ``data.mock_classes`` each sample also belongs to a class, named by its first caption token,
that picks its code distribution (``class_code_weights``). With ``data.mock_layouts`` each sample
also has its own shape, ``[latent_frames, H_l, W_l]`` drawn from the list by its index, so mixed
resolutions, durations and images can be planned from ``sample_length`` without generating them.
"""

from __future__ import annotations

import functools
import random
from typing import List, Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.vocab import LumosVocab, build_video_sample, video_sample_length

# Caption ids are drawn above the reserved/special range so they never look like structure.
_TEXT_ID_LOW = 10000


@functools.lru_cache(maxsize=4096)
def _class_permutation(seed: int, label: int, num_codes: int) -> torch.Tensor:
    """Codebook permutation of one mock class; cached, as every sample of the class reuses it
    (a 64,000-code permutation costs about a millisecond)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + label + (7 << 48))
    return torch.randperm(num_codes, generator=gen)


class MockVideoDataset:
    """Indexable, infinite source of unpadded ``(tokens [n], labels [n])`` long tensors (n is
    ``sample_length(i)``; the collate pads to ``data.seq_length``)."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, frames: Optional[int] = None,
                 split: str = "train", seq_length: Optional[int] = None):
        d = cfg.data
        self.vocab = vocab
        # Each split (and the 1-frame image stream) draws from its own generator seeds.
        salt = {"train": 0, "valid": 1, "test": 2}[split] + (3 if frames == 1 and d.mock_frames != 1 else 0)
        self.seed = cfg.train.seed
        self._salt = salt << 48
        self.seq_length = seq_length or d.seq_length
        self.frames = d.mock_frames if frames is None else frames
        self.grid = tuple(d.mock_grid)
        self.text_tokens = d.mock_text_tokens
        self.classes = d.mock_classes
        if self.classes > vocab.text_vocab_size - _TEXT_ID_LOW:
            raise ValueError(f"data.mock_classes={self.classes} needs more caption ids than the "
                             f"{vocab.text_vocab_size - _TEXT_ID_LOW} above {_TEXT_ID_LOW}")
        self.layouts: List[Tuple[int, int, int]] = (
            [tuple(int(v) for v in layout) for layout in d.mock_layouts] if frames is None else [])
        if not self.layouts:
            self.layouts = [(self.frames, *self.grid)]
        self._code_weights = 1.0 / torch.arange(1, vocab.num_visual_codes + 1, dtype=torch.float64)
        longest = max(self._layout_length(layout) for layout in self.layouts)
        if longest > self.seq_length:
            frames_, rows, cols = max(self.layouts, key=self._layout_length)
            raise ValueError(
                f"mock samples need up to {longest} tokens ({frames_} frames of "
                f"{rows}x{cols} latents, {self.text_tokens} text tokens) but data.seq_length is "
                f"{self.seq_length}; raise data.seq_length or shrink the mock sample"
            )

    def _layout_length(self, layout: Tuple[int, int, int]) -> int:
        frames, rows, cols = layout
        return video_sample_length(self.text_tokens, frames, rows, cols)

    def layout(self, index: int) -> Tuple[int, int, int]:
        """``(latent_frames, H_l, W_l)`` of sample ``index``: the one layout, or with
        ``data.mock_layouts`` one drawn from (seed, index) alone (a cheap draw: batches are
        planned from many lengths)."""
        if len(self.layouts) == 1:
            return self.layouts[0]
        pick = random.Random(self.seed * 1_000_003 + int(index) + self._salt + (11 << 52))
        return self.layouts[pick.randrange(len(self.layouts))]

    def sample_length(self, index: int, max_latent_frames: Optional[int] = None) -> int:
        """Length of mock sample ``index`` (no generation needed), after keeping the first
        ``max_latent_frames`` latent frames when given."""
        frames, rows, cols = self.layout(index)
        if max_latent_frames is not None and frames > max_latent_frames:
            frames = max_latent_frames
        return self._layout_length((frames, rows, cols))

    def class_code_weights(self, label: int) -> torch.Tensor:
        """Unnormalised code weights of class ``label`` (``data.mock_classes``): the Zipf weights
        over a permutation of the codebook that depends on the seed and the class only (every
        split and the image stream share it, so validation measures what training taught)."""
        return self._code_weights[_class_permutation(self.seed, label, self._code_weights.numel())]

    def __getitem__(self, index: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index) + self._salt)
        text = torch.randint(_TEXT_ID_LOW, self.vocab.text_vocab_size, (self.text_tokens,), generator=gen)
        # Zipf-distributed codes: like real codebook usage, skewed, so a model has something to
        # learn within a few steps (uniform codes would pin the visual loss at log(codebook)).
        frames, rows, cols = self.layout(index)
        weights = self._code_weights
        if self.classes:  # drawn after the caption, so the class-free stream is unchanged
            label = int(torch.randint(self.classes, (1,), generator=gen))
            text[0] = _TEXT_ID_LOW + label
            weights = self.class_code_weights(label)
        codes = torch.multinomial(weights, frames * rows * cols, replacement=True, generator=gen)
        codes = codes.view(frames, rows, cols)
        duration, fps = (2, 12) if frames > 1 else (1, 1)
        return build_video_sample(text, codes, duration, fps, self.vocab)
