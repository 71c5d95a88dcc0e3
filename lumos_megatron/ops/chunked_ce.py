"""Per-chunk kernels of the vocab-parallel chunked cross-entropy.

The caller (lumos_megatron/losses) owns the chunking over rows and the tensor-parallel
all-reduces; these functions see one rank's [n, V] logits shard of one chunk:

* ``ce_chunk_forward(logits, target) -> (row_max, sum_exp, target_logit)``, float32 [n] each:
  ``row_max = max_j x_ij``, ``sum_exp = sum_j exp(x_ij - row_max_i)``, ``target_logit = x[i, t_i]``
  if ``0 <= t_i < V`` else 0 (the shard does not own the target). ``V == 0`` gives
  ``(-inf, 0, 0)``, which merges as "nothing" under the usual max/rescale all-reduce.
* ``ce_chunk_backward_(logits, lse, target, grad)``: in place,
  ``x_ij <- (exp(x_ij - lse_i) - [j == t_i]) * grad_i`` (fp32 maths, stored in the logits dtype),
  i.e. the gradient of ``grad_i * (lse_i - x[i, t_i])`` without materialising a second [n, V].

Logits may be float32, bfloat16 or float16; all maths is fp32. A row whose logits are all -inf
has sum_exp 0 (not nan), like an empty shard. The csrc kernels compute the forward in one pass
with an online (running max, rescaled sum) log-sum-exp; the references here use three passes.
"""

from __future__ import annotations

import torch

from lumos_megatron.ops.extension import extension_for

__all__ = [
    "ce_chunk_backward_",
    "ce_chunk_backward_reference_",
    "ce_chunk_forward",
    "ce_chunk_forward_reference",
]


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"ce_chunk: logits must be [n, V], got {tuple(logits.shape)}")
    if target.shape != (logits.shape[0],) or target.dtype != torch.int64:
        raise ValueError(f"ce_chunk: target must be int64 [n={logits.shape[0]}], got "
                         f"{target.dtype} {tuple(target.shape)}")
    if target.device != logits.device:
        raise ValueError(f"ce_chunk: target on {target.device}, logits on {logits.device}")


def _target_onehot_index(target: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(owned, clamped index): rows whose target lies in this shard, and a gather-safe index."""
    owned = (target >= 0) & (target < vocab)
    return owned, target.clamp(0, max(vocab - 1, 0))


def ce_chunk_forward_reference(logits: torch.Tensor, target: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-PyTorch ``ce_chunk_forward`` (see the module docstring)."""
    _check(logits, target)
    n, vocab = logits.shape
    if vocab == 0:
        return (torch.full((n,), float("-inf"), device=logits.device),
                torch.zeros(n, device=logits.device), torch.zeros(n, device=logits.device))
    x = logits.float()
    row_max = x.amax(dim=1)
    # All -inf rows: shift by 0 instead of -inf so that exp gives 0 rather than nan.
    shift = torch.where(row_max == float("-inf"), torch.zeros_like(row_max), row_max)
    sum_exp = torch.exp(x - shift[:, None]).sum(dim=1)
    owned, index = _target_onehot_index(target, vocab)
    target_logit = x.gather(1, index[:, None]).squeeze(1).masked_fill(~owned, 0.0)
    return row_max, sum_exp, target_logit


def ce_chunk_backward_reference_(logits: torch.Tensor, lse: torch.Tensor, target: torch.Tensor,
                                 grad: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch ``ce_chunk_backward_``: overwrites and returns ``logits``."""
    _check(logits, target)
    n, vocab = logits.shape
    probs = torch.exp(logits.float() - lse.float()[:, None])
    owned, index = _target_onehot_index(target, vocab)
    if vocab:
        # Subtract owned (1 or 0) at every row's clamped target rather than 1 at the owned rows
        # only: boolean-mask indexing has a data-dependent length (a host sync on a GPU); x - 0
        # is exactly x, so the result is the same.
        rows = torch.arange(n, device=logits.device)
        probs[rows, index] -= owned.to(probs.dtype)
    logits.copy_(probs * grad.float()[:, None])
    return logits


def ce_chunk_forward(logits: torch.Tensor, target: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row_max, sum_exp, target_logit), float32 [n] each; csrc kernel when built, else reference."""
    ext = extension_for(logits)
    if ext is None:
        return ce_chunk_forward_reference(logits, target)
    _check(logits, target)
    out = ext.ce_chunk_forward(logits, target)
    return out[0], out[1], out[2]


def ce_chunk_backward_(logits: torch.Tensor, lse: torch.Tensor, target: torch.Tensor,
                       grad: torch.Tensor) -> torch.Tensor:
    """In place ``logits <- (softmax(logits) - onehot(target)) * grad[:, None]`` given the full
    (all-reduced) ``lse``; returns ``logits``. csrc kernel when built, else the reference."""
    ext = extension_for(logits)
    if ext is None:
        return ce_chunk_backward_reference_(logits, lse, target, grad)
    _check(logits, target)
    n = logits.shape[0]
    lse = lse.to(device=logits.device, dtype=torch.float32)
    grad = grad.to(device=logits.device, dtype=torch.float32)
    if lse.shape != (n,) or grad.shape != (n,):
        raise ValueError(f"ce_chunk_backward_: lse {tuple(lse.shape)} and grad "
                         f"{tuple(grad.shape)} must be [n={n}]")
    return ext.ce_chunk_backward_(logits, lse, target, grad)
