"""Synthetic Lumos-layout video samples, generated deterministically from the sample index.

Each sample is a real official-layout sequence (BOS, caption ids, separator, video prefix, frame
blocks of random visual codes, video end) built by ``build_video_sample``, so everything
downstream (parser, MM-RoPE positions, frame-causal mask) runs on exactly what real data gives.
Sample ``i`` depends only on (seed, i): results do not depend on DP size, micro-batching or resume.
"""

from __future__ import annotations

from typing import Optional

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.vocab import LumosVocab, build_video_sample, frame_block_length

# Caption ids are drawn above the reserved/special range so they never look like structure.
_TEXT_ID_LOW = 10000


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
        self.duration, self.fps = (2, 12) if self.frames > 1 else (1, 1)
        rows, cols = self.grid
        self._code_weights = 1.0 / torch.arange(1, vocab.num_visual_codes + 1, dtype=torch.float64)
        self._block = block = frame_block_length(rows, cols)
        self._length = 1 + self.text_tokens + 1 + 3 + self.frames * block + 2
        if self._length > self.seq_length:
            raise ValueError(
                f"mock samples need {self._length} tokens ({self.frames} frames of "
                f"{rows}x{cols} latents, {self.text_tokens} text tokens) but data.seq_length is "
                f"{self.seq_length}; raise data.seq_length or shrink the mock sample"
            )

    def sample_length(self, index: int, max_latent_frames: Optional[int] = None) -> int:
        """Length of every mock sample (no read needed), after keeping the first
        ``max_latent_frames`` latent frames when given."""
        if max_latent_frames is None or self.frames <= max_latent_frames:
            return self._length
        return self._length - (self.frames - max_latent_frames) * self._block

    def __getitem__(self, index: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index) + self._salt)
        text = torch.randint(_TEXT_ID_LOW, self.vocab.text_vocab_size, (self.text_tokens,), generator=gen)
        # Zipf-distributed codes: like real codebook usage, skewed, so a model has something to
        # learn within a few steps (uniform codes would pin the visual loss at log(codebook)).
        n = self.frames * self.grid[0] * self.grid[1]
        codes = torch.multinomial(self._code_weights, n, replacement=True, generator=gen)
        codes = codes.view(self.frames, *self.grid)
        return build_video_sample(text, codes, self.duration, self.fps, self.vocab)
