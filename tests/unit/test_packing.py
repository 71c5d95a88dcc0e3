"""Packing (``data.packing``): the plan, the packed micro-batch, and packed attention equal to
per-sample attention for every backend CPU can run (sdpa, flex forward; te_bias's bias form)."""

import pytest
import torch

from lumos_megatron.config import ConfigError, parse_cli
from lumos_megatron.data.mock import MockVideoDataset
from lumos_megatron.models.frame_mask import mask_from_segment_ids
from lumos_megatron.models.inputs import build_model_inputs
from lumos_megatron.objective import build_objective
from lumos_megatron.training.packing_plan import balance, first_fit_decreasing, imbalance, split_to_count
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE

LAYOUTS = "data.mock_layouts=[[2,4,4],[1,4,4],[3,4,8],[1,8,8]]"


def _cfg(*overrides):
    return parse_cli(["--config", str(TINY_RECIPE), "data.seq_length=192", LAYOUTS, *overrides])


def _vocab(cfg):
    return LumosVocab(vocab_size=cfg.model.vocab_size)


def test_first_fit_decreasing_packs_longest_first_within_capacity():
    lengths = [50, 90, 30, 70, 20, 40]
    packs = first_fit_decreasing(lengths, 100)
    assert packs == [[1], [3, 2], [0, 5], [4]]  # 90 | 70+30 | 50+40 | 20 (fits none of them)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in p) <= 100 for p in packs)
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([101], 100)


def test_split_and_balance_give_every_rank_work_and_spread_it_evenly():
    packs = split_to_count([[0, 1, 2, 3]], 3)
    assert len(packs) == 3 and sorted(i for p in packs for i in p) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cannot give 3"):
        split_to_count([[0], [1]], 3)
    costs = [10.0, 9.0, 8.0, 3.0, 2.0, 1.0]
    ranks = balance(costs, 2)
    loads = [sum(costs[i] for i in r) for r in ranks]
    assert sorted(loads) == [16.0, 17.0] and imbalance(loads) == pytest.approx(17 / 16.5)
    assert all(balance([5.0, 1.0, 1.0], 3))  # every rank gets one
    equal = balance(costs, 2, equal_counts=True)  # pipelines: as many micro-batches on every rank
    assert [len(r) for r in equal] == [3, 3] and sorted(sum(costs[i] for i in r) for r in equal) == [15.0, 18.0]


def test_mock_layouts_give_deterministic_mixed_shapes_known_without_generating():
    cfg = _cfg()
    vocab = _vocab(cfg)
    data = MockVideoDataset(cfg, vocab)
    shapes = {data.layout(i) for i in range(200)}
    assert shapes == {(2, 4, 4), (1, 4, 4), (3, 4, 8), (1, 8, 8)}
    for i in range(12):
        tokens, labels = data[i]
        assert tokens.numel() == data.sample_length(i) == labels.numel()
        assert data.sample_length(i, 1) <= data.sample_length(i)
    assert MockVideoDataset(cfg, vocab).layout(7) == data.layout(7)
    with pytest.raises(ValueError, match="raise data.seq_length"):
        MockVideoDataset(_cfg("data.seq_length=96"), vocab)


def test_packing_config_errors_are_one_line_each():
    with pytest.raises(ConfigError, match="train.micro_batch_size"):
        _cfg("data.packing=true")  # the tiny recipe's micro-batch size is 2
    with pytest.raises(ConfigError, match="does not support context parallelism"):
        _cfg("data.packing=true", "train.micro_batch_size=1", "--context-parallel-size", "2")
    with pytest.raises(ConfigError, match=r"mock_layouts entry \[2, 5, 4\]"):
        _cfg("data.mock_layouts=[[2,5,4]]")


def _samples(cfg, indices):
    data = MockVideoDataset(cfg, _vocab(cfg))
    return [data[i] for i in indices]


@pytest.mark.parametrize("ardf", [True, False])
def test_packed_targets_hold_each_sample_exactly_as_unpacked(ardf):
    cfg = _cfg(f"ardf.enabled={str(ardf).lower()}", "ardf.cfg_drop_prob=0.5")
    vocab, indices = _vocab(cfg), [3, 4, 5]
    objective = build_objective(cfg, vocab)
    samples = _samples(cfg, indices)
    plain = objective.targets(samples, indices, 7, 192)
    packed = objective.targets(samples, indices, 7, 192 * 2, packed=True)
    assert packed.tokens.shape == (1, 384) and packed.documents == [plain.real_lengths]
    start = 0
    for b, n in enumerate(plain.real_lengths):
        assert torch.equal(packed.tokens[0, start:start + n], plain.tokens[b, :n])
        assert torch.equal(packed.targets[0, start:start + n], plain.targets[b, :n])
        start += n
    assert bool((packed.targets[0, start:] == -100).all())
    if ardf:
        assert torch.equal(packed.mask_stats, plain.mask_stats)


def _packed_inputs(cfg, backend, indices):
    vocab = _vocab(cfg)
    objective = build_objective(cfg, vocab)
    samples = _samples(cfg, indices)
    plain = objective.targets(samples, indices, 0, 192)
    packed = objective.targets(samples, indices, 0, 512, packed=True)
    common = dict(attention_backend_name=backend, rope_variant=cfg.model.rope_variant)
    return (plain, build_model_inputs(plain.tokens, vocab, real_lengths=plain.real_lengths, **common),
            packed, build_model_inputs(packed.tokens, vocab, documents=packed.documents, **common))


def test_packed_inputs_restart_positions_and_frames_per_sample():
    cfg = _cfg()
    plain, per_sample, packed, inputs = _packed_inputs(cfg, "sdpa", [0, 1, 2, 3])
    start = 0
    for b, n in enumerate(plain.real_lengths):
        assert torch.equal(inputs.position_ids[:, 0, start:start + n], per_sample.position_ids[:, b, :n])
        assert torch.equal(inputs.segment_ids[0, start:start + n], per_sample.segment_ids[b, :n])
        assert bool((inputs.document_ids[0, start:start + n] == b).all())
        start += n
    assert int(inputs.num_frames[0]) == int(per_sample.num_frames.sum())
    assert float(inputs.attention_pairs[0]) == pytest.approx(float(per_sample.attention_pairs.sum()))
    # The dense mask: a block diagonal of the samples' own frame-causal masks (and the padding's).
    allowed = ~inputs.attention_mask[0, 0]
    own = mask_from_segment_ids(per_sample.segment_ids)
    start = 0
    for b, n in enumerate(plain.real_lengths):
        assert torch.equal(allowed[start:start + n, start:start + n], own[b, :n, :n])
        assert not allowed[start:start + n, :start].any() and not allowed[start:start + n, start + n:].any()
        start += n


def test_te_bias_of_a_packed_row_is_the_additive_form_of_its_mask():
    cfg = _cfg()
    _, _, _, sdpa = _packed_inputs(cfg, "sdpa", [0, 1, 2])
    _, _, _, te = _packed_inputs(cfg, "te_bias", [0, 1, 2])
    allowed = ~sdpa.attention_mask
    assert torch.all(te.attention_mask[allowed] == 0)
    assert torch.all(te.attention_mask[~allowed] == torch.finfo(torch.float32).min)


def test_flex_block_tables_of_packed_rows_equal_torchs_builder():
    from lumos_megatron.models.attention.flex import build_frame_causal_block_mask

    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        seg, doc, d = [], [], 0
        while len(seg) < 100:
            n = int(torch.randint(3, 30, (1,), generator=gen))
            piece, frame = [], 0
            while len(piece) < n:
                if torch.rand(1, generator=gen) < 0.5:
                    frame += 1
                    piece += [frame] * int(torch.randint(2, 8, (1,), generator=gen))
                else:
                    piece.append(0)
            seg += piece[:n]
            doc += [d] * n
            d += 1
        seg, doc = torch.tensor([seg[:100]]), torch.tensor([doc[:100]])
        for block in (4, 16):
            fast = build_frame_causal_block_mask(seg, block, document_ids=doc)
            ref = build_frame_causal_block_mask(seg, block, compile=False, document_ids=doc)
            assert torch.equal(fast.to_dense(), ref.to_dense()), (trial, block)
            assert torch.equal(fast.kv_num_blocks, ref.kv_num_blocks)
            assert torch.equal(fast.full_kv_num_blocks, ref.full_kv_num_blocks)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_packed_model_forward_equals_per_sample_forward(megatron_single_process, backend):
    """The real model: logits of each sample inside a packed row equal its own forward."""
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = _cfg(f"model.attention_backend={backend}")
    model = build_model_chunks(cfg)[0].eval()
    plain, per_sample, packed, inputs = _packed_inputs(cfg, backend, [0, 1, 2, 3])
    with torch.no_grad():
        ref = model(plain.tokens, per_sample.position_ids, per_sample.attention_mask)
        got = model(packed.tokens, inputs.position_ids, inputs.attention_mask)
    start = 0
    for b, n in enumerate(plain.real_lengths):
        torch.testing.assert_close(got[0, start:start + n], ref[b, :n], rtol=1e-5, atol=1e-5)
        start += n


def test_pack_for_ranks_gives_every_rank_equal_sequences_of_near_equal_work():
    from lumos_megatron.training.packing_plan import pack_for_ranks

    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(100, 3000, (48,), generator=gen).tolist()
    packs = pack_for_ranks(lengths, 8000, 8)
    assert len(packs) % 8 == 0 and sorted(i for p in packs for i in p) == list(range(48))
    assert all(sum(lengths[i] for i in p) <= 8000 for p in packs)
    loads = [sum(lengths[i] for i in p) for p in packs]
    assert imbalance(loads) < imbalance([sum(lengths[i] for i in p) for p in first_fit_decreasing(lengths, 8000)])
    assert imbalance(loads) < 1.1
    assert len(pack_for_ranks([10, 10, 10], 100, 2)) == 2  # fewer sequences than ranks: split
