"""The fused visual CE is exact under tensor parallelism (TP=2) and sequence parallelism: each of
2 gloo processes holds one vocab shard of the output weight (and, with SP, half the sequence);
losses and the gathered input/weight gradients equal the single-process reference, with the loss
rows found in the loss (fallback) and passed in (``loss_rows``, as training does) alike."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lumos_megatron.losses import fused_visual_cross_entropy
from lumos_megatron.losses.reference import visual_loss_rows, visual_token_losses
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

pytestmark = pytest.mark.distributed

S, B, H = 12, 2, 16


def _problem(vocab):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(S, B, H, generator=gen)
    weight = 0.3 * torch.randn(vocab.vocab_size, H, generator=gen)
    labels = torch.full((B, S), IGNORE_INDEX, dtype=torch.long)
    vis = torch.rand(B, S, generator=gen) < 0.6
    labels[vis] = vocab.visual_offset + torch.randint(0, vocab.num_visual_codes, (int(vis.sum()),), generator=gen)
    grad_out = torch.rand(B, S, generator=gen)
    return hidden, weight, labels, grad_out


def _reference(vocab):
    hidden, weight, labels, grad_out = _problem(vocab)
    hidden.requires_grad_()
    weight.requires_grad_()
    logits = (hidden @ weight.t()).transpose(0, 1)
    rows = labels >= vocab.visual_offset
    losses = torch.zeros(B, S)
    losses[rows] = visual_token_losses(logits, labels, vocab)
    (losses * grad_out).sum().backward()
    return losses.detach(), hidden.grad, weight.grad


CASES = [(vocab_size, sp) for vocab_size in (65600, 131200)  # rank 0 without / with visual rows
         for sp in (False, True)]


def _worker(rank, world, port, out):
    from lumos_megatron.platform.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for vocab_size, sequence_parallel in CASES:
            vocab = LumosVocab(vocab_size=vocab_size)
            hidden, weight, labels, grad_out = _problem(vocab)
            shard = vocab.vocab_size // world
            for loss_rows in (None, visual_loss_rows(labels, vocab)):
                w = weight[rank * shard:(rank + 1) * shard].clone().requires_grad_()
                if sequence_parallel:
                    h = hidden[rank * S // world:(rank + 1) * S // world].clone().requires_grad_()
                else:
                    h = hidden.clone().requires_grad_()
                losses = fused_visual_cross_entropy(h, w, labels, vocab, tp_group=dist.group.WORLD,
                                                    sequence_parallel=sequence_parallel, chunk_rows=3,
                                                    loss_rows=loss_rows)
                (losses * grad_out).sum().backward()
                out[(rank, vocab_size, sequence_parallel, loss_rows is not None)] = \
                    (losses.detach(), h.grad, w.grad)
    finally:
        dist.destroy_process_group()


def test_tp2_and_sp_fused_visual_ce_matches_reference():
    from conftest import _free_port

    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2)
    for vocab_size, sequence_parallel in CASES:
        vocab = LumosVocab(vocab_size=vocab_size)
        ref_loss, ref_dh, ref_dw = _reference(vocab)
        shard = vocab_size // 2
        for rank in range(2):
            loss, dh, dw = out[(rank, vocab_size, sequence_parallel, False)]
            with_rows = out[(rank, vocab_size, sequence_parallel, True)]
            what = f"vocab {vocab_size}, SP {sequence_parallel}, rank {rank}"
            assert all(torch.equal(a, b) for a, b in zip(with_rows, (loss, dh, dw))), what
            torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6, msg=what)
            torch.testing.assert_close(dw, ref_dw[rank * shard:(rank + 1) * shard], rtol=1e-5,
                                       atol=1e-6, msg=what)
            expected_dh = ref_dh[rank * S // 2:(rank + 1) * S // 2] if sequence_parallel else ref_dh
            torch.testing.assert_close(dh, expected_dh, rtol=1e-5, atol=1e-6, msg=what)
