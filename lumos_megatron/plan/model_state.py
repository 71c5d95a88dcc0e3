"""Bytes of model state as held on one rank: parameters, gradient buffers, optimizer state.

Counted from the live objects of a built rank (unique tensor storages, so views into megatron's
contiguous buffers count once), and, for the tests and the docs, from the analytic rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Set

import torch


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (torch keeps one Python object per storage)."""
    return id(t.untyped_storage())


def _unique_bytes(tensors: Iterable[torch.Tensor], exclude: Set[int] = frozenset()) -> int:
    seen, total = set(exclude), 0
    for t in tensors:
        key = storage_key(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def model_parameters(chunks) -> List[torch.Tensor]:
    """Every parameter of this rank's model chunks."""
    return [p for chunk in chunks for p in chunk.parameters()]


def gradient_buffers(chunks) -> List[torch.Tensor]:
    """megatron DDP's contiguous gradient buffers (and any ``main_grad`` outside them)."""
    out = []
    for chunk in chunks:
        for buffer in list(getattr(chunk, "buffers", [])) + list(getattr(chunk, "expert_parallel_buffers", [])):
            out.append(buffer.grad_data)
    for p in model_parameters(chunks):
        grad = getattr(p, "main_grad", None)
        if isinstance(grad, torch.Tensor):
            out.append(grad)
    return out


def _inner_optimizers(optimizer) -> Iterator:
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        yield opt


def _tensors_in(obj, depth: int = 3) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth > 0 and isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors_in(value, depth - 1)
    elif depth > 0 and isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors_in(value, depth - 1)


def optimizer_tensors(optimizer) -> List[torch.Tensor]:
    """fp32 master weights (megatron's main-parameter groups, sharded under the distributed
    optimizer) and the torch optimizer's states (Adam's moments)."""
    out: List[torch.Tensor] = []
    for opt in _inner_optimizers(optimizer):
        for name, value in vars(opt).items():
            if name.startswith(("shard_fp32", "fp32_from", "shard_float16")):
                out.extend(_tensors_in(value))
        inner = getattr(opt, "optimizer", None)
        if inner is not None:
            for group in inner.param_groups:
                out.extend(group["params"])
            for state in inner.state.values():
                out.extend(_tensors_in(state, 1))
    return out


@dataclass(frozen=True)
class ModelStateBytes:
    """Model state of one rank, each storage counted once and in one category only."""

    parameter_bytes: int
    """The model's parameters as held (bf16 in a bf16 recipe)."""
    gradient_bytes: int
    """DDP gradient buffers (fp32: gradients are reduced in fp32)."""
    optimizer_bytes: int
    """fp32 master weights + optimizer states held on this rank (sharded by the distributed optimizer)."""

    @property
    def total(self) -> int:
        """All model state."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes


def measure_model_state(chunks, optimizer) -> ModelStateBytes:
    """:class:`ModelStateBytes` of a built rank (after the first ``step()`` for Adam's states)."""
    params = model_parameters(chunks)
    grads = gradient_buffers(chunks)
    param_keys = {storage_key(p) for p in params}
    grad_keys = {storage_key(g) for g in grads}
    return ModelStateBytes(
        parameter_bytes=_unique_bytes(params),
        gradient_bytes=_unique_bytes(grads, exclude=param_keys),
        optimizer_bytes=_unique_bytes(optimizer_tensors(optimizer), exclude=param_keys | grad_keys),
    )


def analytic_model_state(num_params: int, precision: str, distributed_optimizer: bool, dp: int) -> ModelStateBytes:
    """What :class:`ModelStateBytes` must be for ``num_params`` parameters on a rank: parameters
    at 2 bytes (bf16) or 4 (fp32); fp32 gradient buffers (4); Adam's two fp32 moments (8), plus an
    fp32 master copy (4) in bf16, all divided by DP under the distributed optimizer. (In fp32
    the master weights are the parameters themselves.)"""
    param_width = 2 if precision == "bf16" else 4
    optimizer_per_param = 8 + (4 if precision == "bf16" else 0)
    optimizer = num_params * optimizer_per_param
    if distributed_optimizer:
        optimizer //= dp
    return ModelStateBytes(num_params * param_width, num_params * 4, optimizer)
