"""Indexed-dataset shards, blends, splits and epoch shuffling."""

import json
import os

import numpy as np
import pytest
import torch

from lumos_megatron.data.blend import BlendedStream, ShuffledSplit, parse_data_path, parse_split, split_range
from lumos_megatron.data.indexed import (
    PretokenizedDataset,
    ShardWriter,
    complete_shards,
    labels_for,
    remove_partial_shard,
)
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab, build_video_sample, parse_layout

VOCAB = LumosVocab()


def _sample(frames, seed, grid=(4, 4)):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randint(10000, 20000, (5 + seed % 7,), generator=gen)
    codes = torch.randint(0, 64000, (frames, *grid), generator=gen)
    return build_video_sample(text, codes, 2, 12, VOCAB)


def _write(root, shard, samples):
    writer = ShardWriter(str(root), shard)
    for i, (tokens, _) in enumerate(samples):
        frames = int((tokens == VOCAB.frame_start).sum())
        writer.add(tokens, {"latent_frames": frames, "latent_grid": [4, 4], "source": f"clip{i}.mp4"})
    return writer.finalize()


def test_shards_round_trip_tokens_labels_and_metadata(tmp_path):
    samples = [_sample(1 + i % 3, i) for i in range(7)]
    _write(tmp_path, 0, samples[:4])
    _write(tmp_path, 1, samples[4:])
    ds = PretokenizedDataset(str(tmp_path), VOCAB)
    assert len(ds) == 7
    for i, (tokens, labels) in enumerate(samples):
        got_tokens, got_labels = ds[i]
        assert torch.equal(got_tokens, tokens) and torch.equal(got_labels, labels)
        parse_layout(got_tokens, VOCAB)  # the W1.2 parser accepts what we stored
        assert ds.metadata(i)["source"] == f"clip{i % 4 if i < 4 else i - 4}.mp4"
        assert ds.sample_length(i) == tokens.numel()
    # Keeping one latent frame removes (frames - 1) frame blocks of 3 + 4 * 5 + 1 tokens.
    assert ds.sample_length(2, max_latent_frames=1) == samples[2][0].numel() - 2 * 24


def test_labels_are_ignored_before_the_video_start():
    tokens, labels = _sample(2, 0)
    assert torch.equal(labels_for(tokens, VOCAB), labels)
    assert int((labels_for(tokens, VOCAB) != IGNORE_INDEX).nonzero()[0]) == int(
        (tokens == VOCAB.video_start).nonzero()[0])


def test_an_uncommitted_shard_is_invisible_and_removable(tmp_path):
    _write(tmp_path, 0, [_sample(1, 0)])
    writer = ShardWriter(str(tmp_path), 1)
    writer.add(_sample(1, 1)[0], {})
    # Interrupted before finalize: only temporary files exist for shard 1.
    assert [os.path.basename(p) for p in complete_shards(str(tmp_path))] == ["shard-00000"]
    assert len(PretokenizedDataset(str(tmp_path), VOCAB)) == 1
    writer._meta.close()
    remove_partial_shard(writer.prefix)
    assert sorted(os.listdir(tmp_path)) == ["shard-00000.bin", "shard-00000.idx", "shard-00000.meta.jsonl"]


def test_damaged_sidecar_and_missing_dataset_are_named(tmp_path):
    prefix = _write(tmp_path, 0, [_sample(1, 0), _sample(1, 1)])
    with open(prefix + ".meta.jsonl", "w") as f:
        f.write(json.dumps({}) + "\n")
    with pytest.raises(ValueError, match="meta.jsonl has 1 lines"):
        PretokenizedDataset(str(tmp_path), VOCAB)
    with pytest.raises(FileNotFoundError, match="no pre-tokenized dataset"):
        PretokenizedDataset(str(tmp_path / "nothing"), VOCAB)


def test_data_path_and_split_parsing():
    assert parse_data_path(["a"]) == [(1.0, "a")]
    assert parse_data_path(["1", "a", "3", "b"]) == [(0.25, "a"), (0.75, "b")]
    with pytest.raises(ValueError, match="weight"):
        parse_data_path(["x", "a", "3", "b"])
    assert parse_split("98,2,0") == pytest.approx((0.98, 0.02, 0.0))
    assert split_range(100, "98,2,0", "train") == (0, 98)
    assert split_range(100, "98,2,0", "valid") == (98, 100)
    assert split_range(100, "98,2,0", "test") == (100, 100)
    with pytest.raises(ValueError, match="data.split"):
        parse_split("a,b")


class _Range:
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        assert 0 <= i < self.n
        return i

    def sample_length(self, i, max_latent_frames=None):
        return i


def test_shuffled_split_visits_every_sample_once_per_epoch_in_a_new_order():
    view = ShuffledSplit(_Range(20), 5, 15, seed=0, salt=0)
    epoch0 = [view[k] for k in range(10)]
    epoch1 = [view[k] for k in range(10, 20)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5, 15))
    assert epoch0 != epoch1
    again = ShuffledSplit(_Range(20), 5, 15, seed=0, salt=0)
    assert [again[k] for k in range(10)] == epoch0


def test_blend_follows_the_weights_and_is_prefix_stable():
    parts = [ShuffledSplit(_Range(10), 0, 10, 0, i, shuffle=False) for i in range(2)]
    blend = BlendedStream(parts, [0.25, 0.75])
    which = [blend.locate(k)[0] for k in range(400)]
    assert abs(np.mean(which) - 0.75) < 0.01
    # Each dataset's positions count up 0, 1, 2, ... in the order it is drawn.
    for d in (0, 1):
        positions = [blend.locate(k)[1] for k in range(400) if which[k] == d]
        assert positions == list(range(len(positions)))
    big = BlendedStream(parts, [0.25, 0.75])
    big.locate(5000)
    assert [big.locate(k) for k in range(400)] == [blend.locate(k) for k in range(400)]
