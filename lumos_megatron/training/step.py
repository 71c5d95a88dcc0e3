"""The forward step and loss function handed to megatron-core's forward/backward schedules."""

from __future__ import annotations

from functools import partial
from typing import Dict, Tuple

import torch


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict]:
    """Per-token loss [b, s] → (sum over loss tokens, number of loss tokens, report).

    Returning the token count makes megatron (``calculate_per_token_loss``) divide the gradient by
    the number of loss tokens of the whole global batch: a token mean over micro-batches and DP
    ranks, the official reduction.
    """
    losses = output_tensor.float()
    loss_sum = torch.sum(losses * loss_mask)
    num_tokens = loss_mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.float()])
    return loss_sum, num_tokens, {"lm loss": report}


def forward_step(data_iterator, model):
    """One micro-batch through one model chunk; returns (output, loss closure) as megatron expects."""
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch["attention_mask"],
        labels=batch["labels"],
    )
    return output, partial(loss_func, batch["loss_mask"])
