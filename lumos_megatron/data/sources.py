"""The sample streams a run reads: ``video`` (always; all data when not joint) and ``image``
(joint image+video training), for the train or valid split, from mock data, pre-tokenized
dataset directories blended by weight, or (streaming mode) a manifest decoded on the fly."""

from __future__ import annotations

from typing import Dict

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.blend import BlendedStream, ShuffledSplit, parse_data_path, split_range
from lumos_megatron.data.mock import MockVideoDataset
from lumos_megatron.vocab import LumosVocab

VIDEO, IMAGE = "video", "image"


def joint_training(cfg: LumosConfig) -> bool:
    """Alternating image and video steps (official stage 2)?"""
    d = cfg.data
    return bool(d.image_data_path) or (d.mock and d.mock_image)


def image_seq_length(cfg: LumosConfig) -> int:
    """Padded length of image-stream samples."""
    return cfg.data.image_seq_length or cfg.data.seq_length


def _blend(paths, cfg: LumosConfig, vocab: LumosVocab, split: str, salt: int) -> BlendedStream:
    from lumos_megatron.data.indexed import PretokenizedDataset

    parts, weights = [], []
    for number, (weight, path) in enumerate(parse_data_path(paths)):
        dataset = PretokenizedDataset(path, vocab)
        start, end = split_range(len(dataset), cfg.data.split, split)
        if end <= start:
            raise ValueError(f"{path}: its {split} split is empty ({len(dataset)} samples, data.split="
                             f"{cfg.data.split!r}); change data.split or add data")
        parts.append(ShuffledSplit(dataset, start, end, cfg.train.seed, salt * 1000 + number,
                                   shuffle=split == "train"))
        weights.append(weight)
    return BlendedStream(parts, weights)


def build_data_streams(cfg: LumosConfig, vocab: LumosVocab, split: str = "train") -> Dict[str, object]:
    """``{stream name: indexable source of unpadded (tokens, labels)}`` for ``split``.

    Every source also has ``sample_length(k)`` (stored length, no read), used to pick a step's
    padded length. Sources are endless: index k of a finite dataset wraps into its next epoch.
    """
    d = cfg.data
    streams: Dict[str, object] = {}
    if d.mock:
        streams[VIDEO] = MockVideoDataset(cfg, vocab, split=split)
        if joint_training(cfg):
            streams[IMAGE] = MockVideoDataset(cfg, vocab, frames=1, split=split,
                                              seq_length=image_seq_length(cfg))
        return streams
    if d.streaming_manifest:
        from lumos_megatron.data.streaming import StreamingVideoSource

        streams[VIDEO] = StreamingVideoSource(cfg, vocab, split)
    else:
        streams[VIDEO] = _blend(d.data_path, cfg, vocab, split, salt=0)
    if d.image_data_path:
        streams[IMAGE] = _blend(d.image_data_path, cfg, vocab, split, salt=1)
    return streams
