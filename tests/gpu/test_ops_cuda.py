"""CUDA kernels of lumos_megatron._C vs the pure-PyTorch references (run on the CPU copies)."""

import pytest
import torch
import torch.nn.functional as F

from lumos_megatron.ops import (
    ce_chunk_backward_,
    ce_chunk_backward_reference_,
    ce_chunk_forward,
    ce_chunk_forward_reference,
    load_extension,
    tube_mask_apply,
    tube_mask_apply_reference,
)


def _has_cuda_kernels():
    ext = load_extension()
    return torch.cuda.is_available() and ext is not None and ext.has_cuda()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_cuda_kernels(),
                       reason="needs a CUDA GPU and lumos_megatron._C built with CUDA kernels"),
]
MASK_ID = 8193


def tube_batch(batch, length, max_period, seed):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 70000, (batch, length), generator=gen)
    labels = torch.randint(0, 70000, (batch, length), generator=gen)
    content = torch.rand(batch, length, generator=gen) < 0.9
    period = torch.randint(1, max_period + 1, (batch,), generator=gen)
    period[0] = 0
    num_masked = (torch.rand(batch, generator=gen) * (period + 1)).long().clamp(max=period)
    stream = torch.randint(0, 2**62, (batch,), generator=gen)
    return tokens, labels, content, period, num_masked, stream


@pytest.mark.parametrize("batch,length,max_period", [(1, 1, 1), (3, 700, 50), (8, 16384, 4084),
                                                     (2, 5000, 9000)])
@pytest.mark.parametrize("params_on_cuda", [False, True])
def test_tube_mask_cuda_equals_reference(batch, length, max_period, params_on_cuda):
    tokens, labels, content, period, num_masked, stream = tube_batch(batch, length, max_period, length)
    ref = tube_mask_apply_reference(tokens, labels, content, period, num_masked, stream, MASK_ID)
    params = [t.cuda() if params_on_cuda else t for t in (period, num_masked, stream)]
    out = tube_mask_apply(tokens.cuda(), labels.cuda(), content.cuda(), *params, MASK_ID)
    for r, o in zip(ref, out):
        assert o.is_cuda and torch.equal(r, o.cpu())


def test_tube_mask_cuda_rejects_too_many():
    tokens, labels, content, _, _, stream = tube_batch(2, 64, 8, 0)
    with pytest.raises(ValueError, match="sample 1"):
        tube_mask_apply(tokens.cuda(), labels.cuda(), content.cuda(), torch.tensor([4, 4]),
                        torch.tensor([1, 5]), stream, MASK_ID)


def ce_inputs(n, vocab, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, vocab, generator=gen) * 3
              + torch.linspace(-20, 20, max(vocab, 1))[:vocab]).to(dtype)
    target = torch.randint(0, max(vocab, 1), (n,), generator=gen)
    target[0] = -100
    return logits, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,vocab", [(1, 1), (5, 3), (64, 1000), (257, 32000), (3, 64000), (4, 0)])
def test_ce_forward_cuda_equals_reference(dtype, n, vocab):
    logits, target = ce_inputs(n, vocab, dtype, seed=n)
    ref = ce_chunk_forward_reference(logits, target)
    out = [t.cpu() for t in ce_chunk_forward(logits.cuda(), target.cuda())]
    assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2])
    # per-thread fp32 partial sums + a tree merge: a few ulp from the reference's summation
    torch.testing.assert_close(out[1], ref[1], rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n,vocab", [(1, 1), (64, 1000), (33, 64000)])
def test_ce_backward_cuda_equals_reference(dtype, n, vocab):
    logits, target = ce_inputs(n, vocab, dtype, seed=n + 1)
    row_max, sum_exp, _ = ce_chunk_forward_reference(logits, target)
    lse = row_max + sum_exp.log()
    grad = torch.rand(n) + 0.5
    ref = ce_chunk_backward_reference_(logits.clone(), lse, target, grad)
    mine = logits.cuda()
    out = ce_chunk_backward_(mine, lse.cuda(), target.cuda(), grad.cuda())
    assert out is mine
    if dtype == torch.float32:
        torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(out.cpu().float(), ref.float(), rtol=2 ** -7, atol=1e-6)


def test_ce_backward_cuda_matches_autograd():
    logits, target = ce_inputs(40, 5000, torch.float32, seed=5)
    target[0] = 3
    grad = torch.rand(40)
    leaf = logits.clone().requires_grad_(True)
    (F.cross_entropy(leaf, target, reduction="none") * grad).sum().backward()
    x = logits.cuda()
    row_max, sum_exp, _ = ce_chunk_forward(x, target.cuda())
    out = ce_chunk_backward_(x, row_max + sum_exp.log(), target.cuda(), grad.cuda())
    torch.testing.assert_close(out.cpu(), leaf.grad, rtol=0, atol=1e-6)


def test_ce_cuda_strided_views():
    big = ce_inputs(8, 1200, torch.float32, seed=2)[0].cuda()
    target = torch.randint(0, 1000, (8,)).cuda()
    view = big[:, 100:1100]
    ref = ce_chunk_forward_reference(view.cpu(), target.cpu())
    out = ce_chunk_forward(view, target)
    assert torch.equal(out[0].cpu(), ref[0])
    torch.testing.assert_close(out[1].cpu(), ref[1], rtol=2e-6, atol=0)
