"""The forward step and loss function handed to megatron-core's forward/backward schedules."""

from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Tuple

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor,
              frame_index: Optional[torch.Tensor] = None, mask_stats: Optional[torch.Tensor] = None,
              report_frames: int = 0,
              attention_pairs: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict]:
    """Per-token loss [b, s] → (sum over loss tokens, number of loss tokens, reports).

    Returning the token count makes megatron (``calculate_per_token_loss``) divide the gradient by
    the number of loss tokens of the whole global batch: a token mean over micro-batches and DP
    ranks, the official reduction. Tokens whose loss is exactly 0 are not counted, as the official
    mean drops them (``all_closs[all_closs != 0]``); their gradient is 0 anyway.

    Reports (each a tensor of sums, reduced over micro-batches and DP by the loop): ``lm loss``
    ``[sum, tokens]``; with ``frame_index`` [b, s] (latent frame of each loss position, -1
    elsewhere) ``frame loss`` ``[report_frames, 2]``; with ``mask_stats`` ``mask ratio``
    ``[masked, maskable]``.
    """
    losses = output_tensor.float()
    counted = (loss_mask > 0) & (losses != 0)
    loss_sum = torch.sum(losses * counted)
    num_tokens = counted.sum().to(torch.int)
    reports = {"lm loss": torch.stack([loss_sum.detach(), num_tokens.float()])}
    if frame_index is not None and report_frames > 0:
        in_range = counted & (frame_index >= 0) & (frame_index < report_frames)
        idx = frame_index[in_range]
        per_frame = torch.zeros(report_frames, 2, dtype=torch.float32, device=losses.device)
        per_frame[:, 0].index_add_(0, idx, losses.detach()[in_range])
        per_frame[:, 1].index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
        reports["frame loss"] = per_frame
    if mask_stats is not None:
        reports["mask ratio"] = mask_stats.float()
    if attention_pairs is not None:
        reports["attention pairs"] = attention_pairs.float().reshape(1)
    return loss_sum, num_tokens, reports


def forward_step(data_iterator, model, report_frames: int = 0):
    """One micro-batch through one model chunk; returns (output, loss closure) as megatron expects."""
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch["attention_mask"],
        labels=batch["labels"],
    )
    return output, partial(loss_func, batch["loss_mask"], frame_index=batch.get("frame_index"),
                           mask_stats=batch.get("mask_stats"), report_frames=report_frames,
                           attention_pairs=batch.get("attention_pairs"))


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
