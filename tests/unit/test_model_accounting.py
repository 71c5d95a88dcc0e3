"""Model accounting: parameter counts against a real megatron model, FLOPs per token against the
trainer's ``step_flops`` on real batches, and the AR-DF mean mask ratio."""

import math

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.training.flops import (
    DataLayout,
    expected_loss_rows,
    expected_mask_ratio,
    flops_per_token,
    representative_sample,
    step_flops,
)
from lumos_megatron.models.parameter_counts import parameter_counts

from conftest import TINY_RECIPE


def _cfg(*overrides):
    return parse_cli(["--config", str(TINY_RECIPE), *overrides])


def _group(name: str) -> str:
    """Group of a megatron parameter name, as tools/checkpoint/inspect.py groups them."""
    if name.startswith("embedding."):
        return "embedding"
    if name.startswith("output_layer."):
        return "output_layer"
    if ".self_attention." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "norms"


@pytest.mark.parametrize("overrides", [
    (),
    ("model.num_layers=3", "model.num_query_groups=4"),
    ("model.tie_embeddings=true",),
    ("model.qk_layernorm=false", "model.hidden_size=96", "model.ffn_hidden_size=256",
     "model.num_attention_heads=3", "model.num_query_groups=1"),
    ("model.add_bias_linear=true",),
], ids=["tiny", "mha-3-layers", "tied", "no-qk-norm", "biases"])
def test_parameter_counts_match_the_megatron_model(megatron_single_process, overrides):
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = _cfg(*overrides)
    (model,) = build_model_chunks(cfg)
    counts = parameter_counts(cfg.model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    by_group = {}
    for name, p in model.named_parameters():
        by_group[_group(name)] = by_group.get(_group(name), 0) + p.numel()
    assert {k: v for k, v in counts.by_group.items() if v} == by_group
    h, v = cfg.model.hidden_size, cfg.model.vocab_size
    assert counts.embedding == v * h
    assert counts.output_layer == (0 if cfg.model.tie_embeddings else v * h)
    assert counts.non_embedding == counts.total - counts.embedding - counts.output_layer


def test_expected_mask_ratio_is_the_mean_of_the_official_schedule():
    from lumos_megatron.ardf.tube_mask import mask_ratio

    assert expected_mask_ratio(0.7) == pytest.approx(0.8002, abs=1e-4)
    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    for m in (0.0, 0.5, 0.7, 1.0):
        assert expected_mask_ratio(m) == pytest.approx(float(mask_ratio(u, m).double().mean()), abs=1e-5)


def _real_steps(cfg, steps):
    """(real tokens, allowed pairs, loss rows, computed tokens) of the trainer's first ``steps``
    steps at DP = 1."""
    from lumos_megatron.data.sources import build_data_streams
    from lumos_megatron.training.feed import DataFeed
    from lumos_megatron.vocab import LumosVocab

    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab, "train"), 1, 0, 0, torch.device("cpu"))
    out = []
    for it in range(steps):
        step = feed.step(it)
        rows = sum(float(b["loss_mask"].sum()) for b in step.make_iterator())
        out.append((step.real_tokens, step.attention_pairs, rows, step.computed_tokens))
    return out


@pytest.mark.parametrize("overrides", [("ardf.enabled=false",), ("ardf.enabled=false", "data.pad_to_multiple=8",
                                                                  "data.mock_frames=3")])
def test_flops_per_token_equal_step_flops_of_a_real_batch_without_ardf(overrides):
    cfg = _cfg(*overrides)
    ((real_tokens, pairs, rows, tokens),) = _real_steps(cfg, 1)
    assert tokens > real_tokens  # padding is computed, not model work
    real = step_flops(cfg, real_tokens, pairs, rows)
    per_token = flops_per_token(cfg)
    assert per_token.dense * tokens == pytest.approx(real.dense, rel=1e-12)
    assert per_token.attention * tokens == pytest.approx(real.attention, rel=1e-12)
    assert per_token.lm_head * tokens == pytest.approx(real.lm_head, rel=1e-12)


def test_flops_per_token_of_ardf_use_the_expected_loss_rows():
    cfg = _cfg("train.global_batch_size=32", "data.mock_grid=[8,8]", "data.seq_length=192")
    steps = _real_steps(cfg, 4)
    tokens = sum(s[3] for s in steps)
    real = [step_flops(cfg, *s[:3]) for s in steps]
    per_token = flops_per_token(cfg)
    # Dense and attention differ only by the CFG-dropped samples' captions (the representative
    # sample keeps its caption; a dropped one is shorter): within 2%. The LM head counts the
    # expected masked visual codes.
    assert per_token.dense * tokens == pytest.approx(sum(r.dense for r in real), rel=0.02)
    assert per_token.dense * tokens >= sum(r.dense for r in real)
    assert per_token.attention * tokens == pytest.approx(sum(r.attention for r in real), rel=0.02)
    assert per_token.lm_head * tokens == pytest.approx(sum(r.lm_head for r in real), rel=0.05)
    layout = DataLayout.from_mock(cfg)
    rows = sum(s[2] for s in steps) / (4 * 32)
    assert expected_loss_rows(cfg, layout) == pytest.approx(rows, rel=0.05)
    assert per_token.total == pytest.approx(per_token.dense + per_token.attention + per_token.lm_head)


def test_representative_sample_drops_frames_and_checks_the_length():
    cfg = _cfg("data.seq_length=1024", "ardf.max_latent_frames=3")
    sample = representative_sample(cfg, DataLayout(16, 10, (4, 4)))
    assert sample.shape == (1, 1024)
    # 3 of the 10 frames are kept: BOS (id 0) + 16 text + separator + 3 prefix + 3 frame blocks + 2.
    assert int((sample[0, 1:] != 0).sum()) == 16 + 1 + 3 + 3 * (3 + 4 * 5 + 1) + 2
    with pytest.raises(ValueError, match="more than the sequence length 96"):
        representative_sample(_cfg(), DataLayout(16, 4, (8, 8)))
    # Per padded token, model work scales with the sample's share of the sequence (padding is no
    # model work); per real token the dense part is the same, and the longer sample's attention is more.
    small, large = flops_per_token(_cfg()), flops_per_token(cfg, DataLayout(16, 10, (4, 4)))
    real_small = int(representative_sample(_cfg(), DataLayout.from_mock(_cfg()))[0, 1:].ne(0).sum()) + 1
    real_large = int(sample[0, 1:].ne(0).sum()) + 1  # + BOS, whose id is the pad id
    assert small.dense * 96 / real_small == pytest.approx(large.dense * 1024 / real_large, rel=1e-12)
    assert large.attention * 1024 / real_large > small.attention * 96 / real_small
    assert math.isfinite(large.total)
