"""The forward step handed to megatron-core's forward/backward schedules."""

from __future__ import annotations

from functools import partial
from typing import Optional

from megatron.core.pipeline_parallel import get_forward_backward_func

from lumos_megatron.objective import Objective


def forward_step(data_iterator, model, objective: Objective):
    """One micro-batch through one model chunk; returns (output, loss closure) as megatron
    expects. The closure is the objective's loss reduction and reports.

    ``loss_rows`` (fused visual loss only) are the loss rows the data side computed on the CPU
    (``training.batch.rank_micro_batch``), so the last stage's loss needs no host sync to find
    them; megatron's DDP wrapper passes the keyword through to ``LumosModel.forward``."""
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch["attention_mask"],
        labels=batch["labels"],
        loss_rows=batch.get("loss_rows"),
    )
    return output, partial(objective.loss_func, batch["loss_mask"], frame_index=batch.get("frame_index"),
                           mask_stats=batch.get("mask_stats"))


def run_forward_backward(step_func, chunks, iterators, cfg, num_microbatches: int,
                         forward_only: bool = False, seq_length: Optional[int] = None,
                         micro_batch_size: Optional[int] = None):
    """One global batch through megatron's schedule (1F1B, interleaved with VPP chunks);
    returns the per-micro-batch reports of the last stage. ``seq_length``/``micro_batch_size``
    (default: the config's) are the step's padded shape, which sizes pipeline p2p tensors."""
    return get_forward_backward_func()(
        forward_step_func=step_func,
        data_iterator=iterators if len(iterators) > 1 else iterators[0],
        model=chunks if len(chunks) > 1 else chunks[0],
        num_microbatches=num_microbatches,
        seq_length=seq_length or cfg.data.seq_length,
        micro_batch_size=micro_batch_size or cfg.train.micro_batch_size,
        forward_only=forward_only,
    )
