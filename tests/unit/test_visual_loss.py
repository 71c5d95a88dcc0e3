"""Visual cross-entropy: the reference definition and the fused chunked path (single process;
TP=2 and SP are in tests/distributed/test_fused_visual_ce.py)."""

import pytest
import torch
import torch.nn.functional as F

from lumos_megatron.losses import fused_visual_cross_entropy, visual_cross_entropy, visual_shard
from lumos_megatron.losses.reference import visual_token_losses
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

VOCAB = LumosVocab(vocab_size=65600)  # 64 visual codes


def random_labels(b, s, gen, visual_fraction=0.5):
    labels = torch.full((b, s), IGNORE_INDEX, dtype=torch.long)
    vis = torch.rand(b, s, generator=gen) < visual_fraction
    labels[vis] = VOCAB.visual_offset + torch.randint(0, 64, (int(vis.sum()),), generator=gen)
    labels[0, 0] = VOCAB.new_line  # a masked new-line: kept label, but no visual loss
    return labels


def test_reference_is_mean_ce_over_visual_rows_and_columns():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 65600, generator=gen)
    labels = random_labels(2, 9, gen)
    rows = labels >= VOCAB.visual_offset
    expected = F.cross_entropy(logits[rows][:, 65536:], labels[rows] - 65536)
    torch.testing.assert_close(visual_cross_entropy(logits, labels, VOCAB), expected)
    # Not the full-vocabulary CE: the softmax covers the 64 visual columns only.
    full = F.cross_entropy(logits[rows], labels[rows])
    assert not torch.allclose(full, expected)


def test_reference_drops_exact_zero_losses_and_handles_no_rows():
    logits = torch.zeros(1, 3, 65600)
    labels = torch.tensor([[65536, 65537, IGNORE_INDEX]])
    logits[0, 0, 65536] = 1e4  # certain prediction: CE is exactly 0, dropped from the mean
    per_token = visual_token_losses(logits, labels, VOCAB)
    assert per_token[0] == 0
    torch.testing.assert_close(visual_cross_entropy(logits, labels, VOCAB), per_token[1])
    none = visual_cross_entropy(logits, torch.full_like(labels, IGNORE_INDEX), VOCAB)
    assert none == 0


def test_visual_shard_ranges():
    assert visual_shard(129536, 65536, 1, 0) == (65536, 129536, 0)
    assert visual_shard(129536, 65536, 2, 0) == (0, 0, 0)          # no visual ids on rank 0
    assert visual_shard(129536, 65536, 2, 1) == (768, 64768, 0)
    assert visual_shard(65600, 65536, 2, 1) == (32736, 32800, 0)
    assert visual_shard(129536, 65536, 4, 2) == (768, 32384, 0)
    assert visual_shard(129536, 65536, 4, 3) == (0, 32384, 97152 - 65536)


@pytest.mark.parametrize("chunk_rows", [1, 5, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_reference_loss_and_gradients(chunk_rows, dtype):
    gen = torch.Generator().manual_seed(1)
    s, b, h = 11, 2, 16
    hidden = torch.randn(s, b, h, generator=gen).to(dtype).requires_grad_()
    weight = (0.3 * torch.randn(65600, h, generator=gen)).to(dtype).requires_grad_()
    labels = random_labels(b, s, gen)
    grad_out = torch.rand(b, s, generator=gen)

    per_token = fused_visual_cross_entropy(hidden, weight, labels, VOCAB, chunk_rows=chunk_rows)
    assert per_token.shape == (b, s) and per_token.dtype == torch.float32
    assert torch.all(per_token[labels < VOCAB.visual_offset] == 0)
    (per_token * grad_out).sum().backward()

    ref_hidden = hidden.detach().float().requires_grad_()
    ref_weight = weight.detach().float().requires_grad_()
    logits = (ref_hidden @ ref_weight.t()).transpose(0, 1)  # [b, s, V]
    rows = labels >= VOCAB.visual_offset
    ref_rows = visual_token_losses(logits, labels, VOCAB)
    (ref_rows * grad_out[rows]).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(per_token[rows], ref_rows, **tol)
    torch.testing.assert_close(hidden.grad.float(), ref_hidden.grad, **tol)
    torch.testing.assert_close(weight.grad.float(), ref_weight.grad, **tol)
    assert torch.all(weight.grad[:65536] == 0), "text rows of the head get no gradient"
