"""Activation recompute (full / selective): identical loss and gradients, fewer saved activations."""

import pytest
import torch

from lumos_megatron.objective import build_objective

from lumos_megatron.config import ConfigError, parse_cli
from lumos_megatron.data.indexed import labels_for
from lumos_megatron.models.recompute import (
    RecomputedTransformerLayer,
    layers_to_recompute,
    recomputed_call,
)
from lumos_megatron.vocab import LumosVocab

from conftest import TINY_RECIPE, lumos_batch

VOCAB = LumosVocab()


def _cfg(*overrides):
    return parse_cli(["--config", str(TINY_RECIPE), f"model.vocab_size={VOCAB.vocab_size}",
                      "model.num_layers=3", *overrides])


def _loss_and_grads(cfg):
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.training.batch import training_batch

    tokens = lumos_batch(text_lens=(12, 20), frames=2, grid=(4, 4))
    samples = []
    for row in tokens:
        length = int((row != VOCAB.pad).nonzero().max()) + 1
        samples.append((row[:length].clone(), labels_for(row[:length], VOCAB)))
    batch = training_batch(samples, [0, 1], 0, cfg, VOCAB)
    model = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())[0]
    model.train()
    # With the data side's loss rows, as training passes them (forward_step).
    loss = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"],
                 loss_rows=batch["loss_rows"])
    total = (loss * batch["loss_mask"]).sum()
    total.backward()
    return model, total.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("granularity", ["full", "selective"])
def test_recompute_gives_identical_loss_and_gradients(megatron_single_process, granularity):
    _, base_loss, base_grads = _loss_and_grads(_cfg())
    model, loss, grads = _loss_and_grads(_cfg(f"model.recompute_granularity={granularity}"))
    layers = model.decoder.layers
    if granularity == "full":
        assert all(isinstance(layer, RecomputedTransformerLayer) for layer in layers)
    else:
        assert all(type(l.self_attention.core_attention).__name__.startswith("Recomputed") for l in layers)
    assert torch.equal(loss, base_loss)
    assert base_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], base_grads[name], rtol=0, atol=1e-7, msg=name)


def test_recompute_num_layers_recomputes_the_first_layers_only(megatron_single_process):
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = _cfg("model.recompute_granularity=full", "model.recompute_num_layers=2")
    model = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())[0]
    kinds = [isinstance(layer, RecomputedTransformerLayer) for layer in model.decoder.layers]
    assert kinds == [True, True, False]
    assert layers_to_recompute(None, 4, None) == 0
    assert layers_to_recompute("full", 4, None) == 4
    assert layers_to_recompute("full", 4, 9) == 4


def test_recompute_drops_the_saved_activations():
    # Count what autograd keeps for backward: inside a recomputed call only the inputs stay.
    weight = torch.randn(64, 64, requires_grad=True)

    def block(x):
        for _ in range(4):
            x = torch.tanh(x @ weight)
        return x

    def saved_bytes(fn):
        total = []

        def pack(t):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn(torch.randn(32, 64))
        out.sum().backward()
        return sum(total)

    plain = saved_bytes(block)
    recomputed = saved_bytes(lambda x: recomputed_call(block, x))
    assert recomputed < plain / 2


def test_recompute_replays_dropout(megatron_single_process):
    # Dropout inside a recomputed call must draw the same mask in the recomputation, or the
    # gradient would not match the forward.
    from megatron.core import tensor_parallel

    from lumos_megatron.platform.parallel import seed_model_parallel_rng

    seed_model_parallel_rng(3)
    x = torch.randn(16, 16, requires_grad=True)

    def dropped(t):
        with tensor_parallel.get_cuda_rng_tracker().fork():
            return torch.nn.functional.dropout(t, 0.5, training=True) * 3.0

    out = recomputed_call(dropped, x)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.equal(x.grad != 0, kept)


@pytest.mark.parametrize("override,needle", [
    ("model.recompute_granularity=partial", "recompute_granularity"),
    ("model.recompute_num_layers=2", "recompute_num_layers"),
])
def test_bad_recompute_settings_are_rejected(override, needle):
    with pytest.raises(ConfigError, match=needle):
        _cfg(override)
