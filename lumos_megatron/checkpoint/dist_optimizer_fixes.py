"""Fixes for megatron-core 0.16.1's distributed-optimizer checkpoints with torch Adam.

Without Apex/TransformerEngine (every CPU run, and GPU runs without TE) megatron's
``DistributedOptimizer`` wraps ``torch.optim.AdamW``, whose per-parameter state carries a
``step`` tensor that FusedAdam keeps in the param groups instead. Three bugs follow
(docs/megatron.md §5; still present in 0.19). They are not CPU-specific, so they are fixed
here, in the checkpoint layer, rather than in ``platform/cpu_compat``:

(a) distrib_optimizer.py:642 — ``state_dict()`` asserts ``len(steps) == 1``; on a fresh optimizer
    (no state yet: every load, and a save before the first step) there are no steps at all.
    Fix: ``prime_empty_state`` fills the state with megatron's own
    ``_init_optimizer_states_with_dummy_values`` under lr = weight decay = 0, then zeroes ``step``
    so that the state equals a fresh one.
(b) distrib_optimizer.py:936-940 — ``_set_main_param_and_optimizer_states`` copies into the main
    params (fp32: views of the model's leaf params) outside ``no_grad``, and expects a ``step``
    entry that ``load_parameter_state_from_fully_reshardable`` drops. Fix: a wrapper that runs it
    under ``no_grad`` and supplies the current ``step``, which the caller restores later (c).
(c) distrib_optimizer.py:817-823 — **silent**: ``load_state_dict`` assigns ONE ``step`` tensor to
    every parameter; torch Adam increments it in place once per parameter, so after a resume the
    bias correction races ahead and the loss diverges from an uninterrupted run. Fix:
    ``unshare_steps`` gives each parameter its own ``step`` from its param group's saved value.
"""

from __future__ import annotations

import functools
from typing import List

import torch


def distributed_optimizers(optimizer) -> List:
    """The ``DistributedOptimizer`` instances inside a (chained) megatron optimizer."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    inner = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [o for o in inner if isinstance(o, DistributedOptimizer)]


def prime_empty_state(optimizer) -> None:
    """Fix (a): give every distributed optimizer with empty state a state equal to a fresh one.

    Only with torch Adam (no Apex/TE): FusedAdam's ``state_dict`` accepts an empty state.
    """
    from megatron.core.optimizer import distrib_optimizer

    if distrib_optimizer.HAVE_APEX_OR_TE:
        return
    for opt in distributed_optimizers(optimizer):
        inner = opt.optimizer
        if len(inner.state) != 0:
            continue
        saved = [(g.get("lr"), g.get("weight_decay")) for g in inner.param_groups]
        for group in inner.param_groups:
            group["lr"], group["weight_decay"] = 0.0, 0.0  # the dummy step must not move weights
        try:
            opt._init_optimizer_states_with_dummy_values()
        finally:
            for group, (lr, wd) in zip(inner.param_groups, saved):
                group["lr"], group["weight_decay"] = lr, wd
        for state in inner.state.values():
            for key in ("step", "exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].zero_()  # step 0 and zero moments: exactly what Adam starts from


def _set_states_no_grad_with_step(original):
    @functools.wraps(original)
    def wrapper(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            current = self.optimizer.state[main_param].get("step")
            if current is not None:
                # Copied onto itself; unshare_steps sets the real value after the load.
                tensors = {**tensors, "step": current.clone()}
        with torch.no_grad():
            return original(self, model_param, tensors)

    wrapper._lumos_fixed = True
    return wrapper


def apply_load_fix() -> None:
    """Fix (b): install the wrapper on ``DistributedOptimizer`` once (idempotent)."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    method = DistributedOptimizer._set_main_param_and_optimizer_states
    if not getattr(method, "_lumos_fixed", False):
        DistributedOptimizer._set_main_param_and_optimizer_states = _set_states_no_grad_with_step(method)


def unshare_steps(optimizer) -> None:
    """Fix (c): after a load, each parameter gets its own ``step`` tensor (its group's value)."""
    for opt in distributed_optimizers(optimizer):
        inner = opt.optimizer
        for group in inner.param_groups:
            for param in group["params"]:
                state = inner.state.get(param)
                if not state or "step" not in state:
                    continue
                old = state["step"]
                value = float(group["step"]) if "step" in group else float(old)
                state["step"] = torch.tensor(value, dtype=old.dtype, device=old.device)
