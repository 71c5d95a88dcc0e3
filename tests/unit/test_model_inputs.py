"""The model-inputs builder: one layout parse per micro-batch, the same positions and mask as
the per-piece functions, and the attention-backend registry it builds masks through."""

import typing

import pytest
import torch

from lumos_megatron.config import ConfigError, LumosConfig, parse_cli, validate_config
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.models.inputs import build_model_inputs
from lumos_megatron.models.mm_rope import channel_axes, effective_positions, mm_rope_positions
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE, lumos_batch

VOCAB = LumosVocab()


def test_inputs_equal_the_piecewise_functions():
    tokens = lumos_batch(text_lens=(12, 30), frames=2, grid=(4, 8))
    inputs = build_model_inputs(tokens, VOCAB)
    segments = frame_segment_ids(tokens, VOCAB)
    assert torch.equal(inputs.segment_ids, segments)
    assert torch.equal(inputs.position_ids, effective_positions(mm_rope_positions(tokens, VOCAB)))
    assert torch.equal(inputs.attention_mask, (~mask_from_segment_ids(segments)).unsqueeze(1))
    assert inputs.num_frames.tolist() == [2, 2]
    assert inputs.attention_pairs.tolist() == mask_from_segment_ids(segments).sum((1, 2)).double().tolist()


def test_layout_is_parsed_once_per_micro_batch(monkeypatch):
    """The training path (DataFeed → objective → model inputs) parses each sample's layout once."""
    import lumos_megatron.vocab.layout as layout_module
    from lumos_megatron.data.sources import build_data_streams
    from lumos_megatron.training.feed import DataFeed

    cfg = parse_cli(["--config", str(TINY_RECIPE), "train.micro_batch_size=2", "train.global_batch_size=4"])
    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab), 1, 0, 0, torch.device("cpu"))
    calls = []
    real = layout_module.parse_layout
    monkeypatch.setattr(layout_module, "parse_layout", lambda *a, **k: calls.append(1) or real(*a, **k))
    step = feed.step(0)
    for micro, batch in enumerate(step.make_iterator(), start=1):
        assert len(calls) == micro * cfg.train.micro_batch_size  # one parse per sample, no more
    assert micro == step.num_microbatches == 2


def test_head_dim_rule_is_the_same_in_validation_and_mm_rope():
    """3d_contiguous needs a multiple of 16 (validation used to say 32); mm_rope a multiple of 32."""
    for variant in ("mm_rope", "3d_contiguous", "1d"):
        for d in range(2, 130, 2):
            cfg = LumosConfig()
            cfg.model.rope_variant, cfg.model.kv_channels = variant, d
            try:
                channel_axes(d, variant)
                tables_ok = True
            except ValueError:
                tables_ok = False
            try:
                validate_config(cfg)
                config_ok = True
            except ConfigError as err:
                assert "rope_variant" in str(err)
                config_ok = False
            assert config_ok == tables_ok, (variant, d)
    cfg = LumosConfig()
    cfg.model.rope_variant, cfg.model.kv_channels = "3d_contiguous", 16
    validate_config(cfg)


def test_backend_registry_drives_config_choices_and_cp_support():
    from lumos_megatron.config.schema import ModelConfig
    from lumos_megatron.models.attention.backends import attention_backend, backend_names

    assert backend_names()[0] == "sdpa" and set(backend_names()) >= {"sdpa", "flex", "te_bias"}
    hint = typing.get_type_hints(ModelConfig)["attention_backend"]
    assert typing.get_args(hint) == backend_names()
    assert [n for n in backend_names() if attention_backend(n).supports_context_parallel] == ["sdpa"]
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attention_backend("flash")
    sdpa = attention_backend("sdpa")
    assert sdpa.core_attention_module().__name__ == "SDPACoreAttention"
    assert sdpa.core_attention_module(context_parallel=True).__name__ == "AllGatherCPCoreAttention"
    with pytest.raises(ValueError, match="does not support context parallelism"):
        attention_backend("flex").core_attention_module(context_parallel=True)


def test_ardf_switch_is_read_in_one_module():
    """``cfg.ardf.enabled`` decides the objective in ``lumos_megatron/objective.py`` only."""
    import pathlib

    import lumos_megatron

    root = pathlib.Path(lumos_megatron.__file__).parent
    readers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "ardf.enabled" in p.read_text())
    assert readers == ["objective.py"]
