"""model.attention_backend wiring: flex and te_bias batches, LumosModel forward parity, rejection.

CPU can only check the flex forward (no FlexAttention backward on CPU) and the te_bias bias
semantics (TE is CUDA-only); training parity and the TE kernel itself are in tests/gpu.
"""

import sys

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from lumos_megatron.config import ConfigError, check_runtime_support, parse_cli
from lumos_megatron.models.frame_mask import frame_causal_mask, frame_segment_ids
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

from conftest import TINY_RECIPE, lumos_batch

VOCAB = LumosVocab()
# lumos_batch draws visual codes from the full 64,000-code book, so the model needs the full vocab.
FULL_VOCAB = f"model.vocab_size={VOCAB.vocab_size}"


def _cfg(*overrides):
    return parse_cli(["--config", str(TINY_RECIPE), FULL_VOCAB, *overrides])


def _inputs(backend, tokens, precision="fp32"):
    from lumos_megatron.objective import TargetBatch, build_objective
    from lumos_megatron.training.batch import assemble_micro_batch

    targets = torch.full_like(tokens, IGNORE_INDEX)
    cfg = _cfg(f"model.attention_backend={backend}", f"train.precision={precision}")
    return assemble_micro_batch(TargetBatch(tokens, targets), cfg, VOCAB, build_objective(cfg, VOCAB))[0]


def test_flex_batch_carries_a_block_mask_equal_to_the_dense_mask():
    from lumos_megatron.models.attention.flex import BlockMask, FrameCausalBlockMask

    tokens = lumos_batch()
    sdpa, flex = _inputs("sdpa", tokens), _inputs("flex", tokens)
    mask = flex["attention_mask"]
    assert isinstance(mask, BlockMask) and isinstance(mask, FrameCausalBlockMask)
    b, length = tokens.shape
    allowed = create_mask(mask.mask_mod, b, None, length, length, "cpu")
    assert torch.equal(~allowed, sdpa["attention_mask"])  # same mask, opposite convention
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        assert torch.equal(flex[key], sdpa[key])


def test_flex_mask_moves_with_its_segment_ids():
    # What DataFeed does to every batch value; BlockMask.to alone would take neither
    # non_blocking nor the tensor the mask_mod closes over. 'meta' stands in for a second device.
    batch = _inputs("flex", lumos_batch())
    moved = {k: v.to("meta", non_blocking=True) for k, v in batch.items()}["attention_mask"]
    assert moved.kv_num_blocks.device.type == "meta" and moved.segment_ids.device.type == "meta"
    closure = [c.cell_contents for c in moved.mask_mod.__closure__]
    assert any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in closure)
    same = batch["attention_mask"].to("cpu")
    assert torch.equal(same.to_dense(), batch["attention_mask"].to_dense())


def test_data_feed_delivers_the_block_mask():
    from lumos_megatron.data.sources import build_data_streams
    from lumos_megatron.models.attention.flex import FrameCausalBlockMask
    from lumos_megatron.training.feed import DataFeed

    def first_batch(backend):
        cfg = parse_cli(["--config", str(TINY_RECIPE), f"model.attention_backend={backend}"])
        vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
        feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab), 1, 0, 0, torch.device("cpu"))
        return next(feed.step(0).make_iterator())

    sdpa, flex = first_batch("sdpa"), first_batch("flex")
    mask = flex["attention_mask"]
    assert isinstance(mask, FrameCausalBlockMask)
    b, length = sdpa["tokens"].shape
    assert torch.equal(~create_mask(mask.mask_mod, b, None, length, length, "cpu"),
                       sdpa["attention_mask"])
    assert torch.equal(flex["tokens"], sdpa["tokens"])


def test_te_bias_batch_is_the_additive_form_of_the_mask():
    tokens = lumos_batch()
    allowed = frame_causal_mask(tokens, VOCAB).unsqueeze(1)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        bias = _inputs("te_bias", tokens, precision)["attention_mask"]
        assert bias.dtype == dtype and bias.shape == (2, 1, *allowed.shape[-2:])
        assert torch.all(bias[allowed] == 0)
        assert torch.all(bias[~allowed] == torch.finfo(dtype).min)


def test_additive_bias_gives_the_same_attention_as_the_bool_mask(megatron_single_process):
    from lumos_megatron.models.attention.sdpa import SDPACoreAttention
    from lumos_megatron.models.attention.te_bias import frame_causal_attention_bias
    from lumos_megatron.models.layer_spec import build_transformer_config

    config = build_transformer_config(_cfg())
    attn = SDPACoreAttention(config, 1, None).eval()
    tokens = lumos_batch()
    seg = frame_segment_ids(tokens, VOCAB)
    s, b, d = tokens.shape[1], tokens.shape[0], config.kv_channels
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(s, b, 4, d, generator=gen)
    k, v = (torch.randn(s, b, 2, d, generator=gen) for _ in range(2))
    ref = attn(q, k, v, ~frame_causal_mask(tokens, VOCAB).unsqueeze(1))
    via_bias = attn(q, k, v, None, attention_bias=frame_causal_attention_bias(seg))
    torch.testing.assert_close(via_bias, ref, rtol=1e-6, atol=1e-6)


def test_flex_model_forward_equals_sdpa_model_forward(megatron_single_process):
    from lumos_megatron.models.lumos_model import build_model_chunks

    tokens = lumos_batch()  # 2 real samples, different prompt lengths, 3 frames, L = 275
    models = {b: build_model_chunks(_cfg(f"model.attention_backend={b}"))[0]
              for b in ("sdpa", "flex")}
    # The init is keyed by parameter names only, so both backends start from the same weights.
    ref_state = models["sdpa"].state_dict()
    for name, value in models["flex"].state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, ref_state[name]), name
    logits = {}
    for backend, model in models.items():
        batch = _inputs(backend, tokens)
        model.eval()
        with torch.no_grad():
            logits[backend] = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])
    assert logits["flex"].shape == (*tokens.shape, VOCAB.vocab_size)
    torch.testing.assert_close(logits["flex"], logits["sdpa"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["flex", "te_bias"])
def test_non_sdpa_backends_reject_context_parallelism(backend):
    with pytest.raises(ConfigError) as err:
        _cfg(f"model.attention_backend={backend}", "--context-parallel-size", "2")
    assert "does not support context parallelism" in str(err.value)
    assert "model.attention_backend=sdpa" in str(err.value)


def test_unknown_backend_is_named():
    with pytest.raises(ConfigError, match="choose one of .*'sdpa', 'flex', 'te_bias'"):
        _cfg("model.attention_backend=flash")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_flex_training_without_cuda_exits_2_with_one_line(capsys):
    from lumos_megatron.train import main

    cfg = _cfg("model.attention_backend=flex")
    check_runtime_support(cfg, training=False)  # forward-only use is fine
    rc = main(["--config", str(TINY_RECIPE), "model.attention_backend=flex"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "FlexAttention has no CPU backward" in err[0] and "attention_backend=sdpa" in err[0]


def test_te_bias_without_transformer_engine_is_a_config_error(monkeypatch, megatron_single_process):
    from lumos_megatron.models.attention.te_bias import TEBiasCoreAttention
    from lumos_megatron.models.layer_spec import build_transformer_config

    # None in sys.modules makes the import fail even where TE is installed.
    monkeypatch.setitem(sys.modules, "transformer_engine", None)
    monkeypatch.setitem(sys.modules, "transformer_engine.pytorch", None)
    cfg = _cfg("model.attention_backend=te_bias")
    with pytest.raises(ConfigError) as err:
        check_runtime_support(cfg)
    message = str(err.value)
    assert "\n" not in message and "pip install -e '.[te]'" in message
    with pytest.raises(ConfigError, match="needs TransformerEngine"):
        TEBiasCoreAttention(build_transformer_config(cfg), 1, None)
