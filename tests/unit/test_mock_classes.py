"""Mock samples with classes (``data.mock_classes``): the class is the first caption token, it picks
the code distribution, and the class-free stream is what it was."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lumos_megatron.config import parse_cli, validate_config
from lumos_megatron.data.mock import MockVideoDataset
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE

TEXT_ID_LOW = 10000  # first caption id of mock samples


def _dataset(classes: int, split: str = "train", frames=None, **data) -> MockVideoDataset:
    cfg = parse_cli(["--config", str(TINY_RECIPE), f"data.mock_classes={classes}"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data))
    return MockVideoDataset(cfg, LumosVocab(vocab_size=cfg.model.vocab_size), frames=frames, split=split)


def _caption_and_codes(ds: MockVideoDataset, index: int):
    tokens, _ = ds[index]
    vocab = ds.vocab
    caption = tokens[1:1 + ds.text_tokens]
    codes = vocab.code_of(tokens[vocab.is_visual(tokens)])
    return caption, codes


def test_without_classes_the_samples_do_not_change():
    plain, with_classes = _dataset(0), _dataset(8)
    for i in range(5):
        caption0, codes0 = _caption_and_codes(plain, i)
        caption, codes = _caption_and_codes(with_classes, i)
        # The class is drawn after the caption: the rest of the caption is the same draw.
        assert torch.equal(caption[1:], caption0[1:])
        assert TEXT_ID_LOW <= int(caption[0]) < TEXT_ID_LOW + 8
        assert codes.numel() == codes0.numel()
    assert torch.equal(plain[3][0], _dataset(0)[3][0])  # deterministic


def test_the_class_token_picks_the_code_distribution():
    ds = _dataset(4)
    pooled = {label: [] for label in range(4)}
    for i in range(400):
        caption, codes = _caption_and_codes(ds, i)
        pooled[int(caption[0]) - TEXT_ID_LOW].append(codes)
    assert all(len(v) > 50 for v in pooled.values())  # every class is drawn
    top = {}
    for label, chunks in pooled.items():
        counts = torch.bincount(torch.cat(chunks), minlength=ds.vocab.num_visual_codes).double()
        weights = ds.class_code_weights(label)
        # The class's most likely code is the most frequent one, and the empirical frequencies
        # follow the class's normalised Zipf weights (total variation below 0.1 over ~2k draws).
        assert int(counts.argmax()) == int(weights.argmax())
        assert 0.5 * (counts / counts.sum() - weights / weights.sum()).abs().sum() < 0.1
        top[label] = int(weights.argmax())
    assert len(set(top.values())) > 1  # classes differ


def test_class_distributions_are_shared_by_splits_and_streams():
    train, valid = _dataset(16), _dataset(16, split="valid")
    images = _dataset(16, frames=1)
    for label in (0, 5, 15):
        assert torch.equal(train.class_code_weights(label), valid.class_code_weights(label))
        assert torch.equal(train.class_code_weights(label), images.class_code_weights(label))
    # Same multiset of weights (a permutation of the Zipf weights), different orders.
    a, b = train.class_code_weights(0), train.class_code_weights(1)
    assert torch.equal(a.sort().values, b.sort().values) and not torch.equal(a, b)


@pytest.mark.parametrize("overrides, message", [
    (["data.mock_classes=-1"], "data.mock_classes=-1"),
    (["data.mock_classes=3", "data.mock_text_tokens=0"], "mock_text_tokens >= 1"),
])
def test_bad_class_settings_are_refused(overrides, message):
    cfg = parse_cli(["--config", str(TINY_RECIPE), *overrides], validate=False)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_more_classes_than_caption_ids_is_refused():
    with pytest.raises(ValueError, match="caption ids"):
        _dataset(70000)
