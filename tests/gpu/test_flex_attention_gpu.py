"""FlexAttention frame-causal backend on CUDA: compiled flex vs dense SDPA, forward and backward.

Uses a real Lumos layout at L ≈ 4k (256-token prompt + one 48x84-latent frame of 4,084 tokens)
in bf16. Both bf16 kernels are compared to an fp32 dense-SDPA reference computed from the same
(upcast) inputs, so the tolerance measures bf16 rounding, not disagreement between kernels.
"""

import pytest
import torch
import torch.nn.functional as F

from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.vocab import LumosVocab

from conftest import lumos_batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB = LumosVocab()
ATOL, RTOL = 2e-2, 2e-2


def lumos_segments(text_lens=(256, 300), frames=1, grid=(48, 84)):
    """Segment ids [B, L] on CUDA of right-padded real Lumos samples (L not a multiple of 128)."""
    return frame_segment_ids(lumos_batch(text_lens, frames, grid), VOCAB).cuda()


def run(attn, q, k, v, grad_out):
    """Forward + backward from fresh leaves; returns (out, dq, dk, dv)."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = attn(q, k, v)
    out.backward(grad_out.to(out.dtype))
    return out, q.grad, k.grad, v.grad


def test_compiled_block_mask_equals_eager():
    from lumos_megatron.models.attention.flex import build_frame_causal_block_mask

    seg = lumos_segments()
    compiled = build_frame_causal_block_mask(seg, compile=True)
    eager = build_frame_causal_block_mask(seg, compile=False)
    assert torch.equal(compiled.to_dense(), eager.to_dense())
    assert torch.equal(compiled.full_kv_num_blocks, eager.full_kv_num_blocks)


@pytest.mark.parametrize("kv_heads", [16, 4])
def test_flex_matches_dense_sdpa_fwd_bwd_bf16(kv_heads):
    from lumos_megatron.models.attention.flex import (
        build_frame_causal_block_mask,
        frame_causal_flex_attention,
    )

    seg = lumos_segments()
    batch, length = seg.shape
    assert 4300 < length < 4400
    allowed = mask_from_segment_ids(seg).unsqueeze(1)
    block_mask = build_frame_causal_block_mask(seg)
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, 16, length, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(batch, kv_heads, length, 128, device="cuda", generator=gen,
                        dtype=torch.bfloat16) for _ in range(2))
    grad_out = torch.randn(batch, 16, length, 128, device="cuda", generator=gen)
    gqa = kv_heads != 16

    def dense(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=allowed, enable_gqa=gqa)

    ref = run(dense, q.float(), k.float(), v.float(), grad_out)
    flex = run(lambda *t: frame_causal_flex_attention(*t, block_mask), q, k, v, grad_out)
    sdpa_bf16 = run(dense, q, k, v, grad_out)
    for name, r, f, s in zip(("out", "dq", "dk", "dv"), ref, flex, sdpa_bf16):
        assert f.dtype == torch.bfloat16, name
        torch.testing.assert_close(f.float(), r, atol=ATOL, rtol=RTOL, msg=f"flex {name}")
        torch.testing.assert_close(s.float(), r, atol=ATOL, rtol=RTOL, msg=f"sdpa {name}")


def test_flex_core_attention_cuda_matches_sdpa_core_attention():
    from megatron.core.transformer import TransformerConfig

    from lumos_megatron.models.attention.flex import (
        FlexCoreAttention,
        build_frame_causal_block_mask,
    )
    from lumos_megatron.models.attention.sdpa import SDPACoreAttention

    seg = lumos_segments()
    batch, length = seg.shape
    cfg = TransformerConfig(num_layers=1, hidden_size=2048, num_attention_heads=16,
                            num_query_groups=4, kv_channels=128, attention_dropout=0.0)
    gen = torch.Generator(device="cuda").manual_seed(1)
    query = torch.randn(length, batch, 16, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
    key, value = (torch.randn(length, batch, 4, 128, device="cuda", generator=gen,
                              dtype=torch.bfloat16) for _ in range(2))
    masked_out = ~mask_from_segment_ids(seg).unsqueeze(1)
    ref = SDPACoreAttention(cfg, 1, None)(query.float(), key.float(), value.float(), masked_out)
    out = FlexCoreAttention(cfg, 1, None)(query, key, value, build_frame_causal_block_mask(seg))
    assert out.shape == (length, batch, 16 * 128)
    torch.testing.assert_close(out.float(), ref, atol=ATOL, rtol=RTOL)
