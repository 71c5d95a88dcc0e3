"""Pre-tokenized Lumos samples as Megatron indexed datasets (``.bin``/``.idx``, int32 ids) plus a
per-sample metadata sidecar.

A dataset directory (what ``tools/pretokenize.py --output DIR`` writes, and what ``data.data_path``
names) holds::

    DIR/dataset.json                 what produced it: tokenizers, fps, duration, resolution, the
                                     number-token table used to fill the frames/fps placeholders
    DIR/shard-00000.bin / .idx       megatron IndexedDataset, one sequence (= one document) per sample
    DIR/shard-00000.meta.jsonl       one JSON line per sample, in order: ``latent_frames``,
                                     ``latent_grid`` [H_l, W_l], ``duration``, ``fps``, ``width``,
                                     ``height``, ``source``, ``caption``

Only token ids are stored: labels follow from the official layout (-100 for the human turn, i.e.
everything before the first video start 9004; the token itself from there on, docs/method.md §1.2).

A shard is written under temporary names and renamed when complete, ``.idx`` last: a shard whose
``.idx`` exists is whole, anything else is the leftover of an interrupted run.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab, frame_block_length

DATASET_INFO = "dataset.json"
SHARD_GLOB_PREFIX = "shard-"
_TMP = ".tmp"


def shard_prefix(root: str, shard: int) -> str:
    """Path prefix of shard number ``shard`` under ``root``."""
    return os.path.join(root, f"{SHARD_GLOB_PREFIX}{shard:05d}")


def complete_shards(root: str) -> List[str]:
    """Prefixes of the complete shards under ``root`` (those whose ``.idx`` was committed), sorted."""
    if not os.path.isdir(root):
        return []
    names = sorted(n[: -len(".idx")] for n in os.listdir(root)
                   if n.startswith(SHARD_GLOB_PREFIX) and n.endswith(".idx") and _TMP not in n)
    return [os.path.join(root, n) for n in names]


def labels_for(tokens: torch.Tensor, vocab: LumosVocab) -> torch.Tensor:
    """Official labels of a stored sample: -100 before the first video start, the token after."""
    labels = tokens.clone()
    starts = (tokens == vocab.video_start).nonzero()
    first = int(starts[0]) if starts.numel() else tokens.numel()
    labels[:first] = IGNORE_INDEX
    return labels


class ShardWriter:
    """Collects samples of one shard and commits them atomically with ``finalize``."""

    def __init__(self, root: str, shard: int):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        os.makedirs(root, exist_ok=True)
        self.prefix = shard_prefix(root, shard)
        self._tmp = self.prefix + _TMP
        self._builder = IndexedDatasetBuilder(self._tmp + ".bin", dtype=np.int32)
        self._meta = open(self._tmp + ".meta.jsonl", "w", encoding="utf-8")
        self.count = 0

    def add(self, tokens: torch.Tensor, metadata: Dict[str, Any]) -> None:
        """Append one sample (1-D ids) and its metadata line."""
        ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > np.iinfo(np.int32).max):
            raise ValueError(f"sample {self.count} of {self.prefix} has ids outside int32")
        self._builder.add_document(ids.to(torch.int32), [ids.numel()])
        self._meta.write(json.dumps(metadata, sort_keys=True) + "\n")
        self.count += 1

    def finalize(self) -> str:
        """Write the index and rename the shard into place (``.idx`` last); returns its prefix."""
        self._meta.close()
        self._builder.finalize(self._tmp + ".idx")
        for ext in (".meta.jsonl", ".bin", ".idx"):
            os.replace(self._tmp + ext, self.prefix + ext)
        return self.prefix

    def abort(self) -> None:
        """Drop the uncommitted shard."""
        self._meta.close()
        remove_partial_shard(self.prefix)


def remove_partial_shard(prefix: str) -> None:
    """Delete what an interrupted run left of shard ``prefix``: its temporary files, and its
    ``.bin``/``.meta.jsonl`` when the ``.idx`` (the commit mark) was never renamed into place."""
    doomed = [prefix + _TMP + ext for ext in (".bin", ".idx", ".meta.jsonl")]
    if not os.path.exists(prefix + ".idx"):
        doomed += [prefix + ".bin", prefix + ".meta.jsonl"]
    for path in doomed:
        if os.path.exists(path):
            os.remove(path)


def read_dataset_info(root: str) -> Dict[str, Any]:
    """``DIR/dataset.json`` (empty dict when absent)."""
    path = os.path.join(root, DATASET_INFO)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class PretokenizedDataset:
    """All complete shards of one dataset directory (or one shard prefix) as indexable
    ``(tokens, labels)`` samples; ``metadata(i)`` is the sidecar line of sample ``i``."""

    def __init__(self, path: str, vocab: LumosVocab):
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.path = path
        self.vocab = vocab
        if os.path.isdir(path):
            prefixes = complete_shards(path)
            self.info = read_dataset_info(path)
        elif os.path.exists(path + ".idx"):
            prefixes = [path]
            self.info = read_dataset_info(os.path.dirname(path))
        else:
            raise FileNotFoundError(f"{path}: no pre-tokenized dataset here (expected a directory written "
                                    "by tools/pretokenize.py or a shard prefix with .bin/.idx)")
        if not prefixes:
            raise FileNotFoundError(f"{path}: no complete shard (shard-XXXXX.idx); did pre-tokenization finish?")
        self._shards = []
        self._meta: List[List[str]] = []
        self._offsets = [0]
        for prefix in prefixes:
            meta_path = prefix + ".meta.jsonl"
            with open(meta_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            if not lines and os.path.getsize(prefix + ".bin") == 0:
                continue  # every input of this shard was skipped
            shard = IndexedDataset(prefix)
            if len(lines) != len(shard):
                raise ValueError(f"{meta_path} has {len(lines)} lines but {prefix}.idx has {len(shard)} "
                                 "samples; the shard is damaged, re-run pre-tokenization")
            self._shards.append(shard)
            self._meta.append(lines)
            self._offsets.append(self._offsets[-1] + len(shard))
        if not self._shards:
            raise FileNotFoundError(f"{path}: every shard is empty (all inputs were skipped; see skipped.jsonl)")
        self._lengths = np.concatenate([s.sequence_lengths for s in self._shards]).astype(np.int64)

    def __len__(self) -> int:
        return self._offsets[-1]

    def _locate(self, index: int) -> Tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {self.path} ({len(self)} samples)")
        shard = bisect_right(self._offsets, index) - 1
        return shard, index - self._offsets[shard]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        shard, local = self._locate(int(index))
        tokens = torch.from_numpy(self._shards[shard][local].astype(np.int64))
        return tokens, labels_for(tokens, self.vocab)

    def sample_length(self, index: int, max_latent_frames: Optional[int] = None) -> int:
        """Length (tokens) of sample ``index`` without reading it: as stored, or after keeping
        its first ``max_latent_frames`` latent frames (from the sidecar's frame count and grid)."""
        length = int(self._lengths[int(index)])
        if max_latent_frames is None:
            return length
        meta = self.metadata(index)
        frames, (rows, cols) = int(meta["latent_frames"]), meta["latent_grid"]
        if frames <= max_latent_frames:
            return length
        return length - (frames - max_latent_frames) * frame_block_length(rows, cols)

    def metadata(self, index: int) -> Dict[str, Any]:
        """The sidecar record of sample ``index``."""
        shard, local = self._locate(int(index))
        return json.loads(self._meta[shard][local])

    @property
    def number_ids(self) -> Optional[Callable[[int], List[int]]]:
        """How the dataset's text tokenizer writes a number (to fill the frames/fps placeholders
        at training time): a lookup in the ``number_tokens`` table pre-tokenization recorded, or
        None for Chameleon's digit rule (no table)."""
        table = self.info.get("number_tokens")
        if not table:
            return None

        def lookup(n: int) -> List[int]:
            if not 0 <= n < len(table):
                raise ValueError(f"{self.path}: no number_tokens entry for {n} (dataset.json has 0.."
                                 f"{len(table) - 1})")
            return list(table[n])

        return lookup
