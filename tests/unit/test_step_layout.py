"""Length-grouped order (``data.length_grouped``) and the step layout over DP ranks (padded rows in
Megatron's order, or packed sequences balanced by work)."""

from types import SimpleNamespace

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.data.length_grouping import LengthGroupedOrder
from lumos_megatron.data.sources import build_data_streams
from lumos_megatron.training.data_plan import StreamBatching
from lumos_megatron.training.feed import DataFeed
from lumos_megatron.training.step_layout import layout_step
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE


class Lengths:
    """A source whose sample k has a pseudo-random length (no tokens)."""

    def __init__(self, seed=0):
        self.lengths = torch.randint(20, 200, (10_000,), generator=torch.Generator().manual_seed(seed)).tolist()

    def sample_length(self, k, max_latent_frames=None):
        return self.lengths[k]


def test_length_grouped_windows_are_sorted_batches_in_a_seeded_order():
    source, gbs, k = Lengths(), 8, 5
    order = LengthGroupedOrder(source, gbs, k, seed=1, salt=0)
    window = [order.batch(start) for start in range(0, gbs * k, gbs)]
    flat = [i for batch in window for i in batch]
    assert sorted(flat) == list(range(gbs * k))  # every sample of the window, once
    for batch in window:
        lengths = [source.lengths[i] for i in batch]
        assert lengths == sorted(lengths)
    # Batches are contiguous slices of the window sorted by length, in a shuffled order.
    by_length = sorted(range(gbs * k), key=lambda i: (source.lengths[i], i))
    slices = [by_length[j * gbs:(j + 1) * gbs] for j in range(k)]
    assert sorted(map(tuple, window)) == sorted(map(tuple, slices)) and window != slices
    # Deterministic: a fresh order (another rank, a resumed run) gives the same batches.
    again = LengthGroupedOrder(source, gbs, k, seed=1, salt=0)
    assert [again.batch(start) for start in range(gbs * k, 3 * gbs * k, gbs)] == \
        [order.batch(start) for start in range(gbs * k, 3 * gbs * k, gbs)]
    assert LengthGroupedOrder(source, gbs, k, seed=2, salt=0).batch(0) != order.batch(0) or \
        LengthGroupedOrder(source, gbs, k, seed=2, salt=0).batch(8) != order.batch(8)
    with pytest.raises(ValueError, match="does not start a global batch"):
        order.batch(3)


def _stream(mbs=1, gbs=8, seq=200):
    return StreamBatching("video", mbs, gbs, seq)


def test_padded_layout_is_megatrons_order():
    source = Lengths()
    layout = layout_step(_stream(mbs=2, gbs=8), list(range(8)), source, 2, packing=False, multiple=None,
                         divisor=1, max_latent_frames=None, fixed_length=False)
    assert [[mb.indices for mb in rank] for rank in layout.ranks] == [[(0, 1), (4, 5)], [(2, 3), (6, 7)]]
    assert layout.computed_tokens == 8 * 200 and layout.dp_imbalance == 1.0


@pytest.mark.parametrize("fixed", [False, True])
def test_packed_layout_covers_the_batch_once_and_balances_ranks(fixed):
    source = Lengths(3)
    indices = list(range(100, 132))
    layout = layout_step(_stream(gbs=32, seq=400), indices, source, 4, packing=True, multiple=16, divisor=2,
                         max_latent_frames=None, fixed_length=fixed, flops_per_token=1.0, flops_per_pair=0.01)
    placed = [i for rank in layout.ranks for mb in rank for i in mb.indices]
    assert sorted(placed) == indices and all(layout.ranks)
    for rank in layout.ranks:
        for mb in rank:
            used = sum(source.lengths[i] for i in mb.indices)
            assert mb.packed and used <= mb.seq_length <= 400
            assert mb.seq_length == 400 if fixed else (mb.seq_length % 16 == 0 and mb.seq_length - used < 16)
    real = sum(source.lengths[i] for i in indices)
    assert layout.computed_tokens < 32 * max(source.lengths[i] for i in indices)  # less than padding all
    assert layout.computed_tokens >= real and layout.dp_imbalance < 1.2


def test_feed_packed_steps_use_every_sample_of_the_global_batch_once():
    cfg = parse_cli(["--config", str(TINY_RECIPE), "data.seq_length=192", "train.micro_batch_size=1",
                     "data.packing=true", "data.length_grouped=true", "data.length_group_window=4",
                     "data.mock_layouts=[[2,4,4],[1,4,4],[3,4,8],[1,8,8]]"])
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    streams = build_data_streams(cfg, vocab)
    feeds = [DataFeed(cfg, vocab, streams, 2, rank, 0, torch.device("cpu")) for rank in (0, 1)]
    for it in range(4):
        steps = [feed.step(it) for feed in feeds]
        tokens = 0
        for rank, step in enumerate(steps):
            for batch in step.make_iterator():
                assert batch["tokens"].shape[0] == 1
                tokens += int(batch["tokens"].shape[1])
        assert tokens == steps[0].computed_tokens
        seen = sorted(i for rank in steps[0].layout.ranks for mb in rank for i in mb.indices)
        assert seen == sorted(feeds[0].schedule.global_indices(it))
    window = sorted(i for it in range(4) for i in feeds[0].schedule.global_indices(it))
    assert window == list(range(32))  # one window of 4 global batches of 8


@pytest.mark.parametrize("packing", [False, True])
def test_resumed_feed_reads_the_same_steps(packing):
    """Exact resume with length grouping: a feed started at a checkpoint's iteration and consumed
    samples lays out every later step as the uninterrupted feed does; with another global batch
    size the windows restart at the resume point (still every sample of a window once)."""
    over = ["data.seq_length=192", "data.length_grouped=true", "data.length_group_window=3",
            "data.mock_layouts=[[2,4,4],[1,4,4],[3,4,8],[1,8,8]]"]
    if packing:
        over += ["train.micro_batch_size=1", "data.packing=true"]
    cfg = parse_cli(["--config", str(TINY_RECIPE), *over])
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    streams = build_data_streams(cfg, vocab)
    full = DataFeed(cfg, vocab, streams, 2, 1, 0, torch.device("cpu"))
    resumed = DataFeed(cfg, vocab, streams, 2, 1, 0, torch.device("cpu"), base_iteration=4,
                       base_samples=full.consumed_after(3))
    for it in range(4, 8):
        assert resumed.layout(it) == full.layout(it)
        a, b = full.step(it), resumed.step(it)
        for x, y in zip(a.make_iterator(), b.make_iterator()):
            assert torch.equal(x["tokens"], y["tokens"]) and torch.equal(x["labels"], y["labels"])
    other = parse_cli(["--config", str(TINY_RECIPE), *over, "train.global_batch_size=4"])
    changed = DataFeed(other, vocab, build_data_streams(other, vocab), 2, 0, 0, torch.device("cpu"),
                       base_iteration=4, base_samples={"video": 38})  # 38 is not a multiple of 4
    seen = sorted(i for it in range(4, 7) for i in changed.schedule.global_indices(it))
    assert seen == list(range(38, 50))
