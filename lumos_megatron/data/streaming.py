"""Streaming mode: decode and tokenize inside the loader, for runs without a pre-tokenization pass.

``data.streaming_manifest`` names a manifest (as ``tools/pretokenize.py --manifest``); each
sample is decoded (DALI on GPU for H.264/HEVC/AV1, DALI CPU for VP8/VP9/MJPEG, PyAV otherwise),
cropped and encoded with the video tokenizer on this process's device when it is read, exactly
as pre-tokenization would have stored it. It trades GPU time per step for no offline pass.

The order is the same as for pre-tokenized data (split, epoch shuffles, pure functions of the
sample index). An input that cannot be used (missing, corrupt, too short, bad caption) is
replaced by the next usable one in that order, so every rank makes the same substitution;
each bad input is reported once per process.
"""

from __future__ import annotations

import sys
from typing import Dict, Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.blend import ShuffledSplit, split_range
from lumos_megatron.data.manifest import read_manifest
from lumos_megatron.data.indexed import labels_for
from lumos_megatron.vocab import LumosVocab

_MAX_SUBSTITUTIONS = 64
"""Consecutive unusable inputs tolerated before streaming gives up (a broken manifest)."""


class _ManifestRows:
    """Manifest entries as an indexable dataset of encoded samples (the ShuffledSplit backend)."""

    def __init__(self, entries, context):
        self.entries, self.context = entries, context
        self.path = context["settings"].manifest
        self._reported: set = set()

    def encode(self, index: int) -> Optional[Tuple[torch.Tensor, Dict]]:
        """Encoded sample of row ``index``, or None (reported once) when it must be skipped."""
        from lumos_megatron.data.pretokenize import encode_entry, skip_record
        from lumos_megatron.data.video import MediaError
        from lumos_megatron.tokenizers.text import CaptionError

        entry = self.entries[index]
        try:
            return encode_entry(entry, self.context)
        except (MediaError, CaptionError, ValueError) as e:
            if entry.path not in self._reported:
                self._reported.add(entry.path)
                record = skip_record(entry, e)
                print(f"lumos_megatron: streaming skips {entry.path} ({record['reason']}): {record['detail']}",
                      file=sys.stderr, flush=True)
            return None


class StreamingVideoSource:
    """Endless source of ``(tokens, labels)`` decoded and tokenized on the fly from a manifest."""

    expensive_reads = True
    """Each read decodes and tokenizes a video: in training, one rank of each tensor(+context)-
    parallel group reads and shares the samples (``training.sample_broadcast``)."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, split: str, device=None):
        from lumos_megatron.data.pretokenize import PretokenizeSettings, encoding_context

        d = cfg.data
        if not d.video_tokenizer or not d.text_tokenizer:
            raise ValueError("streaming (data.streaming_manifest) needs data.video_tokenizer and "
                             "data.text_tokenizer (the specs tools/pretokenize.py takes)")
        settings = PretokenizeSettings(
            manifest=d.streaming_manifest, output="", video_tokenizer=d.video_tokenizer,
            text_tokenizer=d.text_tokenizer, fps=d.media_fps, duration=d.media_duration,
            resolution=d.media_resolution, vocab_size=vocab.vocab_size)
        if device is None and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        entries = read_manifest(d.streaming_manifest)
        self.rows = _ManifestRows(entries, encoding_context(settings, device))
        self.vocab = vocab
        self.number_ids = self.rows.context["text"].encode_number
        start, end = split_range(len(entries), d.split, split)
        self.order = ShuffledSplit(self.rows, start, end, cfg.train.seed, 7, shuffle=split == "train")

    def __getitem__(self, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        for offset in range(_MAX_SUBSTITUTIONS):
            encoded = self.rows.encode(self.order.source_index(k + offset))
            if encoded is not None:
                tokens = encoded[0]
                return tokens, labels_for(tokens, self.vocab)
        raise RuntimeError(f"{self.rows.path}: {_MAX_SUBSTITUTIONS} consecutive inputs from sample {k} on "
                           "could not be used; check the manifest (pre-tokenize it to get a skip report)")

    def sample_length(self, k: int, max_latent_frames: Optional[int] = None) -> int:
        """Unknown before decoding: steps of a streaming source are padded to the full length."""
        return sys.maxsize
