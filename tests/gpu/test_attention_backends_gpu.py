"""model.attention_backend on CUDA: flex trains like sdpa; te_bias attends like sdpa.

* flex: the real entry point trains a few steps with the compiled FlexAttention kernel (forward
  and backward, block mask built on the data side) and its loss curve follows sdpa's. The
  samples span several 128-token blocks, so empty, full and partial tiles all occur.
* te_bias (needs TransformerEngine): TE's DotProductAttention with the frame-causal mask as a
  post_scale_bias against dense SDPA — bf16 forward+backward of the core attention (the fused
  cuDNN path) and a fp32 LumosModel forward.
"""

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.models.attention.te_availability import transformer_engine_problem
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

from conftest import TINY_RECIPE, lumos_batch, read_scalars, run_train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_te = pytest.mark.skipif(torch.cuda.is_available() and transformer_engine_problem() is not None,
                              reason="needs TransformerEngine (pip install -e '.[te]')")

VOCAB = LumosVocab()
ITERS = 3
# 3 frames of 8x8 latents + a 16-token caption = 251 tokens, padded to 256: two 128-blocks.
LONGER_SAMPLES = ["data.seq_length=256", "data.mock_frames=3", "data.mock_grid=[8,8]"]


def _curve(tmp_path, backend):
    tb = tmp_path / backend
    proc = run_train(["--config", str(TINY_RECIPE), "--train-iters", str(ITERS),
                      "--tensorboard-dir", str(tb), f"model.attention_backend={backend}",
                      *LONGER_SAMPLES])
    assert proc.returncode == 0, f"{backend}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return [value for _, value in read_scalars(tb, "lm loss")]


def test_flex_training_follows_sdpa(tmp_path):
    sdpa, flex = _curve(tmp_path, "sdpa"), _curve(tmp_path, "flex")
    assert len(sdpa) == len(flex) == ITERS
    # Step 1 differs only by the attention kernel; later steps add Adam's amplification of
    # fp32 rounding in near-zero gradients.
    assert flex[0] == pytest.approx(sdpa[0], rel=1e-4)
    assert flex == pytest.approx(sdpa, rel=1e-3)
    assert flex[-1] < flex[0], "flex did not learn"


@needs_te
def test_te_bias_core_attention_matches_dense_sdpa_bf16_fwd_bwd(megatron_single_process):
    import torch.nn.functional as F

    from lumos_megatron.models.attention.te_bias import (
        TEBiasCoreAttention,
        frame_causal_attention_bias,
    )
    from lumos_megatron.models.layer_spec import build_transformer_config

    cfg = parse_cli(["--config", str(TINY_RECIPE), "train.precision=bf16",
                     "model.num_attention_heads=16", "model.num_query_groups=4",
                     "model.hidden_size=2048", "model.kv_channels=128", "model.ffn_hidden_size=64"])
    config = build_transformer_config(cfg)
    seg = frame_segment_ids(lumos_batch((256, 300), 1, (48, 84)), VOCAB).cuda()  # L ≈ 4.4k
    length, batch = seg.shape[1], seg.shape[0]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(length, batch, 16, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(length, batch, 4, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
            for _ in range(2))
    grad_out = torch.randn(length, batch, 16 * 128, device="cuda", generator=gen)
    allowed = mask_from_segment_ids(seg).unsqueeze(1)

    def dense(q_, k_, v_):
        out = F.scaled_dot_product_attention(*(t.permute(1, 2, 0, 3) for t in (q_, k_, v_)),
                                             attn_mask=allowed, enable_gqa=True)
        return out.permute(2, 0, 1, 3).reshape(length, batch, -1)

    te_attention = TEBiasCoreAttention(config, 1, None).cuda()
    bias = frame_causal_attention_bias(seg, torch.bfloat16)
    results = []
    for fn, dtype in ((dense, torch.float32), (lambda *t: te_attention(*t, bias), torch.bfloat16)):
        leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
        out = fn(*leaves)
        out.backward(grad_out.to(out.dtype))
        results.append([out] + [t.grad for t in leaves])
    for name, ref, got in zip(("out", "dq", "dk", "dv"), *results):
        assert got.dtype == torch.bfloat16, name
        torch.testing.assert_close(got.float(), ref, atol=2e-2, rtol=2e-2, msg=name)


@needs_te
def test_te_bias_model_forward_equals_sdpa_model_forward(megatron_single_process):
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.objective import TargetBatch, build_objective
    from lumos_megatron.training.batch import assemble_micro_batch

    tokens = lumos_batch()
    logits = {}
    for backend in ("sdpa", "te_bias"):
        cfg = parse_cli(["--config", str(TINY_RECIPE), f"model.vocab_size={VOCAB.vocab_size}",
                         f"model.attention_backend={backend}"])
        (model,) = build_model_chunks(cfg)
        target = TargetBatch(tokens, torch.full_like(tokens, IGNORE_INDEX))
        batch = assemble_micro_batch(target, cfg, VOCAB, build_objective(cfg, VOCAB))[0]
        batch = {key: value.cuda() for key, value in batch.items()}
        model.eval()
        with torch.no_grad():
            logits[backend] = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])
    torch.testing.assert_close(logits["te_bias"], logits["sdpa"], rtol=1e-4, atol=1e-4)
