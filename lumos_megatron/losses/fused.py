"""Fused, chunked, vocab-parallel visual cross-entropy: replaces ``output_layer`` + loss.

The official objective needs logits only at the rows that carry loss (masked visual content)
and only over the 64,000 visual columns. This module gathers exactly those hidden rows,
multiplies them chunk by chunk with this tensor-parallel rank's shard of the *visual rows* of
the output weight and keeps per row only ``(max, sum-exp, target logit)`` in fp32. Two TP
all-reduces (MAX, then one SUM of ``[sum-exp, target]``) combine the shards once for all rows.
Backward recomputes each chunk's logits, turns them into ``softmax - one_hot`` in place and
accumulates the input and weight gradients, so no ``[tokens x vocab]`` tensor ever exists: the
largest temporary is ``chunk_rows x visual_rows_on_this_rank``.

The loss rows are selected with ``index_select`` by an index of static length. Training passes
them in (``loss_rows``, computed on the CPU where the batch is built: ``training.batch``), because
finding them here (``nonzero`` of the visual-label mask) has a data-dependent output shape and
blocks the host until the device has caught up, once per micro-batch. Without ``loss_rows`` (e.g.
inference-side callers and tests) the rows are found here, with that sync.

The TP/SP input plumbing is megatron's own: ``copy_to_tensor_model_parallel_region`` (identity
forward, all-reduce of the input gradient) or, with sequence parallelism,
``gather_from_sequence_parallel_region`` (all-gather forward, reduce-scatter backward) — the
same regions ``ColumnParallelLinear`` uses, so the result is exact under TP, SP and PP.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_sequence_parallel_region,
)

from lumos_megatron.losses.reference import visual_loss_rows
from lumos_megatron.ops import ce_chunk_backward_, ce_chunk_forward
from lumos_megatron.vocab import LumosVocab


def visual_shard(vocab_size: int, visual_offset: int, tp_size: int, tp_rank: int) -> Tuple[int, int, int]:
    """This rank's visual rows of a vocab-parallel output weight.

    Returns ``(lo, hi, first_class)``: local weight rows ``[lo, hi)`` hold the visual ids of
    this rank's vocab shard, and local row ``lo`` is visual class ``first_class``. Ranks whose
    shard holds no visual id get ``lo == hi``.
    """
    if vocab_size % tp_size:
        raise ValueError(f"vocab size {vocab_size} is not divisible by TP = {tp_size}")
    per_rank = vocab_size // tp_size
    start, end = tp_rank * per_rank, (tp_rank + 1) * per_rank
    first, last = max(start, visual_offset), min(end, vocab_size)
    if first >= last:
        return 0, 0, 0
    return first - start, last - start, first - visual_offset


class _ChunkedVisualCE(torch.autograd.Function):
    """Rows ``x [N, h]`` × visual rows ``[lo, hi)`` of this rank's weight shard → per-row CE
    ``[N]`` (fp32). The weight enters whole so that its gradient is produced directly in the
    parameter's shape (no slice-backward copy); only rows ``[lo, hi)`` of it are non-zero."""

    @staticmethod
    def forward(ctx, x, weight, lo: int, hi: int, target, chunk_rows: int,
                group: Optional[dist.ProcessGroup]):
        w = weight[lo:hi]
        n = x.shape[0]
        row_max = torch.empty(n, dtype=torch.float32, device=x.device)
        sum_exp = torch.empty_like(row_max)
        target_logit = torch.empty_like(row_max)
        for r0 in range(0, n, chunk_rows):
            r1 = min(r0 + chunk_rows, n)
            logits = x[r0:r1] @ w.t()
            row_max[r0:r1], sum_exp[r0:r1], target_logit[r0:r1] = ce_chunk_forward(logits, target[r0:r1])
            del logits  # the chunk is the only [rows x vocab] buffer alive
        if group is not None and dist.get_world_size(group) > 1:
            global_max = row_max.clone()
            dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=group)
            # A rank without visual rows has max -inf and sum 0: exp(-inf) * 0 stays 0.
            parts = torch.stack([sum_exp * torch.exp(row_max - global_max), target_logit])
            dist.all_reduce(parts, group=group)
            row_max, sum_exp, target_logit = global_max, parts[0], parts[1]
        lse = row_max + torch.log(sum_exp)
        ctx.save_for_backward(x, weight, target, lse)
        ctx.rows, ctx.chunk_rows = (lo, hi), chunk_rows
        return lse - target_logit

    @staticmethod
    def backward(ctx, grad_loss):
        x, weight, target, lse = ctx.saved_tensors
        lo, hi = ctx.rows
        w = weight[lo:hi]
        grad_loss = grad_loss.float().contiguous()
        grad_x = torch.empty_like(x)
        grad_weight = torch.zeros_like(weight)
        # fp32 weights accumulate straight into the gradient; 16-bit ones through an fp32
        # buffer of the visual rows, so that summing many chunks does not lose precision.
        acc = grad_weight[lo:hi] if weight.dtype == torch.float32 else \
            torch.zeros((hi - lo, weight.shape[1]), dtype=torch.float32, device=weight.device)
        for r0 in range(0, x.shape[0], ctx.chunk_rows):
            r1 = min(r0 + ctx.chunk_rows, x.shape[0])
            logits = x[r0:r1] @ w.t()
            dlogits = ce_chunk_backward_(logits, lse[r0:r1], target[r0:r1], grad_loss[r0:r1])
            torch.mm(dlogits, w, out=grad_x[r0:r1])
            if acc.dtype == dlogits.dtype:
                acc.addmm_(dlogits.t(), x[r0:r1])
            else:
                acc += (dlogits.t() @ x[r0:r1]).float()
            del logits, dlogits
        if acc.data_ptr() != grad_weight[lo:hi].data_ptr():
            grad_weight[lo:hi] = acc.to(weight.dtype)
        return grad_x, grad_weight, None, None, None, None, None


def fused_visual_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               vocab: LumosVocab, *, tp_group: Optional[dist.ProcessGroup] = None,
                               sequence_parallel: bool = False, chunk_rows: int = 1024,
                               loss_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-token visual CE ``[b, s]`` (fp32; 0 where the label is not a visual id).

    ``hidden`` is the final hidden state ``[s, b, h]`` (``[s/tp, b, h]`` under sequence
    parallelism), ``weight`` this rank's ``[V/tp, h]`` output weight shard, ``labels`` ``[b, s]``
    unshifted AR-DF labels. Mathematically equal to :func:`visual_token_losses` of the full
    logits, scattered back to the positions.

    ``loss_rows`` is :func:`visual_loss_rows` of ``labels`` (long ``[N]``, computed beforehand,
    normally on the CPU with the batch). With it, nothing here depends on the label values for a
    shape, so the forward and backward never wait for the device; they are not checked against
    ``labels``, since that check would be the very sync they avoid. None: found here with a
    ``nonzero`` (a host sync on an accelerator), the same rows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    tp_size = dist.get_world_size(tp_group) if tp_group is not None else 1
    tp_rank = dist.get_rank(tp_group) if tp_group is not None else 0
    if tp_size > 1:
        hidden = (gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True,
                                                       group=tp_group)
                  if sequence_parallel else copy_to_tensor_model_parallel_region(hidden, group=tp_group))
    s, b, h = hidden.shape
    if labels.shape != (b, s):
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden states [s={s}, b={b}]")
    flat_labels = labels.t().reshape(-1)  # row r = s_idx * b + b_idx, the hidden layout
    if loss_rows is None:
        rows = visual_loss_rows(labels, vocab)
    else:
        if loss_rows.dim() != 1 or loss_rows.dtype != torch.long:
            raise ValueError(f"loss_rows must be a long [N] tensor, got {loss_rows.dtype} "
                             f"{tuple(loss_rows.shape)}")
        rows = loss_rows.to(hidden.device, non_blocking=True)  # no-op when already there
    x = hidden.reshape(s * b, h).index_select(0, rows)

    lo, hi, first_class = visual_shard(vocab.vocab_size, vocab.visual_offset, tp_size, tp_rank)
    if weight.shape[0] * tp_size != vocab.vocab_size:
        raise ValueError(f"output weight shard has {weight.shape[0]} rows; expected "
                         f"{vocab.vocab_size} / TP {tp_size}")
    classes = flat_labels.index_select(0, rows) - vocab.visual_offset
    local = classes - first_class
    local = torch.where((local >= 0) & (local < hi - lo), local, torch.full_like(local, -1))
    losses = _ChunkedVisualCE.apply(x, weight, lo, hi, local, chunk_rows,
                                    tp_group if tp_size > 1 else None)
    out = torch.zeros(s * b, dtype=torch.float32, device=hidden.device).index_add(0, rows, losses)
    return out.view(s, b).t()
