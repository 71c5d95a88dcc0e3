"""LumosModel building blocks against independent reference formulas (single process)."""

import math

import torch

from lumos_megatron.objective import build_objective
import torch.nn.functional as F

from lumos_megatron.config import parse_cli
from conftest import TINY_RECIPE


class _Cfg:
    params_dtype = torch.float32
    sequence_parallel = False
    qk_layernorm_epsilon = 1e-5


def test_rmsnorm_matches_chameleon_formula():
    from lumos_megatron.models.norms import RMSNorm

    norm = RMSNorm(_Cfg(), 8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(3, 2, 8)
    ref = norm.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    torch.testing.assert_close(norm(x), ref, rtol=1e-6, atol=1e-6)


def test_qk_layernorm_is_shared_across_heads_with_bias():
    from lumos_megatron.models.norms import HeadSharedLayerNorm

    norm = HeadSharedLayerNorm(_Cfg(), 16, eps=0.123)  # megatron's eps is ignored: 1e-5 is official
    assert norm.eps == 1e-5 and norm.weight.shape == (16,) and norm.bias.shape == (16,)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(5, 2, 4, 16)  # [s, b, heads, head_dim]
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)


def test_sdpa_core_attention_matches_explicit_softmax_with_gqa_and_mask(megatron_single_process):
    from megatron.core.transformer.enums import AttnMaskType

    from lumos_megatron.models.attention.sdpa import SDPACoreAttention
    from lumos_megatron.models.layer_spec import build_transformer_config

    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    config = build_transformer_config(cfg)
    attn = SDPACoreAttention(config, 1, AttnMaskType.arbitrary)
    s, b, h, g, d = 7, 2, 4, 2, config.kv_channels
    q, k, v = torch.randn(s, b, h, d), torch.randn(s, b, g, d), torch.randn(s, b, g, d)
    masked = torch.rand(b, 1, s, s) > 0.6
    masked &= ~torch.eye(s, dtype=torch.bool)  # every query keeps at least itself
    out = attn(q, k, v, masked)
    kk = k.repeat_interleave(h // g, dim=2)
    vv = v.repeat_interleave(h // g, dim=2)
    scores = torch.einsum("sbhd,tbhd->bhst", q, kk) / math.sqrt(d)
    scores = scores.masked_fill(masked, float("-inf"))
    ref = torch.einsum("bhst,tbhd->sbhd", scores.softmax(-1), vv).reshape(s, b, h * d)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    causal = attn(q, k, v, None)
    tri = torch.triu(torch.ones(s, s, dtype=torch.bool), 1).expand(b, 1, s, s)
    torch.testing.assert_close(causal, attn(q, k, v, tri), rtol=1e-6, atol=1e-6)


def test_1d_rotary_equals_megatron_stock_rope(megatron_single_process):
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    from lumos_megatron.models.rotary import LumosRotaryEmbedding

    d, s = 32, 12
    stock = RotaryEmbedding(kv_channels=d, rotary_percent=1.0, use_cpu_initialization=True)(s)
    ours = LumosRotaryEmbedding(d, variant="1d")(torch.arange(s).expand(2, s))
    assert ours.shape == (s, 2, 1, d)
    assert torch.equal(ours[:, 0], stock[:, 0]) and torch.equal(ours[:, 1], stock[:, 0])


def test_layout_independent_init_shards_full_tensors():
    from lumos_megatron.models.init import _shard

    full = torch.arange(24.0).view(8, 3)
    p = torch.empty(4, 3)
    p.tensor_model_parallel, p.partition_dim = True, 0
    assert torch.equal(_shard(full, p, 2, 1, glu=False), full[4:])
    # SwiGLU fc1 [gate; up]: rank r holds gate slice r and up slice r.
    assert torch.equal(_shard(full, p, 2, 1, glu=True), torch.cat([full[2:4], full[6:8]]))


def test_model_forward_logits_and_per_token_loss(megatron_single_process):
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = parse_cli(["--config", str(TINY_RECIPE), "model.num_layers=1", "ardf.enabled=false"])
    (model,) = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())
    assert sum(p.numel() for p in model.parameters()) > 0
    names = dict(model.named_parameters())
    assert "output_layer.weight" in names and "embedding.word_embeddings.weight" in names  # untied
    assert names["decoder.layers.0.self_attention.q_layernorm.bias"].shape == (32,)
    tokens = torch.randint(0, 65600, (2, 10))
    pos = torch.arange(10).expand(2, 10)
    logits = model(tokens, pos, None)
    assert logits.shape == (2, 10, 65600) and torch.isfinite(logits).all()
    labels = torch.randint(0, 65600, (2, 10))
    loss = model(tokens, pos, None, labels=labels)
    ref = F.cross_entropy(logits.reshape(-1, 65600).float(), labels.reshape(-1), reduction="none")
    torch.testing.assert_close(loss.reshape(-1), ref, rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"


def test_position_ids_change_the_output(megatron_single_process):
    from lumos_megatron.models.lumos_model import build_model_chunks

    cfg = parse_cli(["--config", str(TINY_RECIPE), "model.num_layers=1"])
    (model,) = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())
    tokens = torch.randint(0, 65600, (1, 8))
    a = model(tokens, torch.arange(8)[None], None)
    b = model(tokens, (torch.arange(8)[None] * 3), None)
    assert not torch.allclose(a, b)


def test_ardf_model_loss_is_the_visual_ce_of_its_own_logits(megatron_single_process):
    """With AR-DF the model's loss output is the fused visual CE: equal to the reference computed
    from the full logits the same model returns without labels, and so are the gradients."""
    from lumos_megatron.losses.reference import visual_token_losses
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

    cfg = parse_cli(["--config", str(TINY_RECIPE), "model.num_layers=1", "ardf.loss_chunk_rows=3"])
    (model,) = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())
    vocab = LumosVocab(vocab_size=65600)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 65600, (2, 10), generator=gen)
    pos = torch.arange(10).expand(2, 10)
    labels = torch.full((2, 10), IGNORE_INDEX)
    labels[:, ::2] = 65536 + torch.randint(0, 64, (2, 5), generator=gen)
    labels[0, 1] = vocab.new_line  # kept label of a masked new-line: no loss
    loss = model(tokens, pos, None, labels=labels)
    assert loss.shape == (2, 10) and torch.all(loss[labels < 65536] == 0)
    loss.sum().backward()
    fused_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(tokens, pos, None)
    ref = visual_token_losses(logits, labels, vocab)
    torch.testing.assert_close(loss[labels >= 65536], ref, rtol=1e-5, atol=1e-6)
    ref.sum().backward()
    for name, param in model.named_parameters():
        # Tensor-wise relative error: single elements differ by fp32 summation order only.
        err = (fused_grads[name] - param.grad).norm() / param.grad.norm().clamp(min=1e-12)
        assert err < 1e-5, f"{name}: relative gradient error {err:.2e}"
