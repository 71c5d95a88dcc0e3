"""Chunked cross-entropy kernels: the references vs independent formulas, csrc vs the references."""

import pytest
import torch
import torch.nn.functional as F

from lumos_megatron.ops import (
    ce_chunk_backward_,
    ce_chunk_backward_reference_,
    ce_chunk_forward,
    ce_chunk_forward_reference,
    extension_available,
)

needs_ext = pytest.mark.skipif(not extension_available(),
                               reason="lumos_megatron._C not built (LUMOS_NO_EXT=1 or no compiler)")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def make(n, vocab, dtype=torch.float32, scale=3.0, seed=0):
    """Logits [n, V] with a spread that exercises the running-max rescale, and targets in range."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, vocab, generator=gen) * scale
              + torch.linspace(-20, 20, max(vocab, 1))[:vocab]).to(dtype)
    target = torch.randint(0, max(vocab, 1), (n,), generator=gen)
    return logits, target


def lse_of(forward_out):
    row_max, sum_exp, _ = forward_out
    return row_max + sum_exp.log()


# ---- references vs independent formulas --------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_forward_matches_logsumexp(dtype):
    logits, target = make(33, 1000, dtype)
    row_max, sum_exp, target_logit = ce_chunk_forward_reference(logits, target)
    x = logits.double()
    assert all(t.dtype == torch.float32 for t in (row_max, sum_exp, target_logit))
    assert torch.equal(row_max.double(), x.amax(1))
    torch.testing.assert_close(lse_of((row_max, sum_exp, None)).double(), torch.logsumexp(x, 1),
                               rtol=1e-6, atol=0)
    assert torch.equal(target_logit.double(), x[torch.arange(33), target])


def test_reference_backward_matches_autograd():
    logits, target = make(17, 300, scale=2.0)
    grad = torch.rand(17)
    leaf = logits.clone().requires_grad_(True)
    (F.cross_entropy(leaf, target, reduction="none") * grad).sum().backward()
    lse = torch.logsumexp(logits, 1)
    out = ce_chunk_backward_reference_(logits, lse, target, grad)
    assert out is logits
    torch.testing.assert_close(out, leaf.grad, rtol=0, atol=1e-6)


def test_reference_shard_semantics():
    logits, _ = make(4, 8)
    target = torch.tensor([-100, -1, 8, 3])  # only the last row's target is in this shard
    _, _, target_logit = ce_chunk_forward_reference(logits, target)
    assert target_logit.tolist()[:3] == [0.0, 0.0, 0.0] and target_logit[3] == logits[3, 3]
    lse, grad = torch.logsumexp(logits, 1), torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = ce_chunk_backward_reference_(logits.clone(), lse, target, grad)
    expected = torch.softmax(logits, 1) * grad[:, None]
    expected[3, 3] -= grad[3]
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_reference_empty_shard_and_all_neg_inf_rows():
    row_max, sum_exp, tl = ce_chunk_forward_reference(torch.zeros(3, 0), torch.tensor([0, 1, -100]))
    assert row_max.tolist() == [float("-inf")] * 3
    assert sum_exp.tolist() == [0.0] * 3 and tl.tolist() == [0.0] * 3
    logits = torch.full((2, 5), float("-inf"))
    logits[1, 2] = 1.5
    row_max, sum_exp, _ = ce_chunk_forward_reference(logits, torch.tensor([0, 2]))
    assert row_max.tolist() == [float("-inf"), 1.5] and sum_exp.tolist() == [0.0, 1.0]


# ---- csrc vs references ------------------------------------------------------------------------

def assert_forward_equal(out, ref):
    for o in out:
        assert o.dtype == torch.float32
    assert torch.equal(out[0], ref[0])  # max and the gathered logit are exact
    assert torch.equal(out[2], ref[2])
    torch.testing.assert_close(out[1], ref[1], rtol=1e-6, atol=0)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,vocab", [(1, 1), (5, 3), (64, 257), (16, 4000), (3, 40000)])
def test_extension_forward_equals_reference(dtype, n, vocab):
    logits, target = make(n, vocab, dtype, seed=n + vocab)
    target[0] = -100  # an ignored row (target outside the shard)
    if n > 1:
        target[1] = vocab
    assert_forward_equal(ce_chunk_forward(logits, target), ce_chunk_forward_reference(logits, target))


@needs_ext
def test_extension_forward_edge_cases():
    # empty shard, no rows, all -inf rows, -inf mixed in, large magnitudes, row-sliced input
    empty = ce_chunk_forward(torch.zeros(3, 0), torch.tensor([0, -1, 5]))
    assert_forward_equal(empty, ce_chunk_forward_reference(torch.zeros(3, 0), torch.tensor([0, -1, 5])))
    none = ce_chunk_forward(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))
    assert all(t.shape == (0,) for t in none)
    logits, target = make(6, 700, scale=40.0)
    logits[0] = float("-inf")
    logits[1, ::3] = float("-inf")
    logits[2, :600] = float("-inf")  # the first blocks of the row are all -inf
    assert_forward_equal(ce_chunk_forward(logits, target), ce_chunk_forward_reference(logits, target))
    big = make(8, 1200)[0]
    view = big[:, 100:1100]  # row stride 1200, unit inner stride
    assert_forward_equal(ce_chunk_forward(view, target[:1].repeat(8)),
                         ce_chunk_forward_reference(view, target[:1].repeat(8)))
    view_t = big.t()[:300]  # inner stride 1200
    t = torch.randint(0, 8, (300,))
    assert_forward_equal(ce_chunk_forward(view_t, t), ce_chunk_forward_reference(view_t, t))


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,vocab", [(1, 1), (7, 3), (32, 1000), (4, 33000)])
def test_extension_backward_equals_reference(dtype, n, vocab):
    logits, target = make(n, vocab, dtype, seed=7 * n + vocab)
    target[0] = -100
    lse = lse_of(ce_chunk_forward_reference(logits, target))
    grad = torch.rand(n) + 0.5
    mine, ref = logits.clone(), logits.clone()
    out = ce_chunk_backward_(mine, lse, target, grad)
    ce_chunk_backward_reference_(ref, lse, target, grad)
    assert out is mine and out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    else:  # same fp32 value up to ~1 ulp of exp, then one rounding: at most one ulp apart
        torch.testing.assert_close(out.float(), ref.float(), rtol=2 ** -7, atol=1e-6)


@needs_ext
def test_extension_backward_matches_autograd():
    logits, target = make(20, 5000, scale=2.0, seed=3)
    grad = torch.rand(20)
    leaf = logits.clone().requires_grad_(True)
    (F.cross_entropy(leaf, target, reduction="none") * grad).sum().backward()
    lse = lse_of(ce_chunk_forward(logits, target))
    out = ce_chunk_backward_(logits, lse, target, grad)
    torch.testing.assert_close(out, leaf.grad, rtol=0, atol=1e-6)


@needs_ext
def test_extension_backward_is_in_place_on_strided_views():
    big = make(6, 900, seed=9)[0]
    target = torch.tensor([0, 5, 899, -100, 900, 7])
    for view_of in (lambda b: b[:, 100:800], lambda b: b.t()[:, :6].t()[:, :700]):
        a, b = big.clone(), big.clone()
        va, vb = view_of(a), view_of(b)
        lse = torch.logsumexp(va, 1)
        grad = torch.rand(va.shape[0])
        assert ce_chunk_backward_(va, lse, target[:va.shape[0]], grad) is va
        ce_chunk_backward_reference_(vb, lse, target[:vb.shape[0]], grad)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # also untouched outside the view
    assert ce_chunk_backward_(torch.zeros(2, 0), torch.zeros(2), torch.tensor([0, 1]),
                              torch.ones(2)).shape == (2, 0)


def test_runtime_opt_out_uses_the_reference(monkeypatch):
    from lumos_megatron.ops import chunked_ce

    calls = []

    def spy(*args):
        calls.append(1)
        return ce_chunk_forward_reference(*args)

    monkeypatch.setattr(chunked_ce, "ce_chunk_forward_reference", spy)
    monkeypatch.setenv("LUMOS_NO_EXT", "1")
    logits, target = make(2, 10)
    chunked_ce.ce_chunk_forward(logits, target)
    assert calls == [1]


@pytest.mark.parametrize("forward", [ce_chunk_forward, ce_chunk_forward_reference])
def test_bad_shapes_raise(forward):
    with pytest.raises(ValueError):
        forward(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        forward(torch.zeros(3), torch.zeros(3, dtype=torch.long))
