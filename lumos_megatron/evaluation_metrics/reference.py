"""The code histogram of real data: a pre-tokenized dataset directory (``tools/pretokenize.py
--output DATA``, see ``lumos_megatron.data.indexed``), for comparison with a generated set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from lumos_megatron.evaluation_metrics.generated_set import EvaluationInputError

FLOOR_SEED = 0


@dataclass
class ReferenceCounts:
    """Code counts of (a subset of) a pre-tokenized dataset."""

    path: str
    total_samples: int
    """Samples in the dataset."""
    samples: int
    """Samples counted (all, or an evenly spaced subset)."""
    counts: np.ndarray
    """int64 ``[codebook_size]``: how often each code occurs in the counted samples' frames."""
    floor_counts: Optional[np.ndarray] = None
    """Counts of a random subset of ``floor_samples`` of the counted samples: compared with the
    rest (``counts - floor_counts``) it gives the divergence two real sets of these sizes show."""
    floor_samples: int = 0
    video_tokenizer: Optional[str] = None
    """The spec the dataset was tokenized with (``dataset.json``), when recorded."""


def visual_codes_of(tokens: torch.Tensor, vocab) -> torch.Tensor:
    """The raw codes of a stored sample: its visual ids from the first video start on.

    The five prompt placeholders share ids with visual codes 0..4 but only occur before the video
    start (``LumosVocab``), so starting there counts frame contents only.
    """
    starts = (tokens == vocab.video_start).nonzero()
    if not starts.numel():
        return tokens.new_empty(0)
    video = tokens[int(starts[0]):]
    return vocab.code_of(video[vocab.is_visual(video)])


def _chosen(total: int, limit: Optional[int]) -> np.ndarray:
    if limit is None or limit >= total:
        return np.arange(total)
    # Evenly spaced over the whole set: shards are written in manifest order, which may be sorted
    # by source, so the first N samples could all come from one source.
    return np.unique(np.linspace(0, total - 1, limit).round().astype(np.int64))


def reference_code_counts(path: str, codebook_size: int, *, max_samples: Optional[int] = None,
                          floor_samples: int = 0, progress: bool = True) -> ReferenceCounts:
    """Count the codes of the pre-tokenized dataset at ``path``.

    ``max_samples`` caps the samples read (evenly spaced); ``floor_samples`` > 0 also counts a
    random subset (seed 0) of that many samples, at most half of those read: its divergence from
    the other samples is the noise floor of comparing a set of that size with the data. Raises
    EvaluationInputError for a directory that is not a dataset, and ValueError when the data
    holds codes outside ``[0, codebook_size)`` (another video tokenizer).
    """
    from tqdm import tqdm

    from lumos_megatron.data.indexed import PretokenizedDataset, read_dataset_info
    from lumos_megatron.vocab import LumosVocab

    try:
        info = read_dataset_info(path)
        settings = info.get("settings", {}) if isinstance(info, dict) else {}
        vocab = LumosVocab(vocab_size=int(settings.get("vocab_size", LumosVocab().vocab_size)))
        dataset = PretokenizedDataset(path, vocab)
    except (FileNotFoundError, ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
        raise EvaluationInputError(f"--reference {path}: {err}") from None
    chosen = _chosen(len(dataset), max_samples)
    floor_n = min(int(floor_samples), len(chosen) // 2)
    in_floor = np.zeros(len(dataset), dtype=bool)
    if floor_n > 0:
        in_floor[np.random.default_rng(FLOOR_SEED).permutation(chosen)[:floor_n]] = True
    counts = np.zeros(codebook_size, dtype=np.int64)
    floor_counts = np.zeros(codebook_size, dtype=np.int64)
    for index in tqdm(chosen, desc="reference", unit="sample", disable=not progress):
        codes = visual_codes_of(dataset[int(index)][0], vocab)
        if codes.numel() and int(codes.max()) >= codebook_size:
            raise ValueError(f"--reference {path} holds code {int(codes.max())}, outside the generated set's "
                             f"codebook of {codebook_size}: it was tokenized with another video tokenizer")
        sample_counts = np.bincount(codes.numpy(), minlength=codebook_size)
        counts += sample_counts
        if in_floor[index]:
            floor_counts += sample_counts
    spec = settings.get("video_tokenizer")
    return ReferenceCounts(path=str(path), total_samples=len(dataset), samples=len(chosen), counts=counts,
                           floor_counts=floor_counts if floor_n > 0 else None, floor_samples=floor_n,
                           video_tokenizer=spec if isinstance(spec, str) else None)
