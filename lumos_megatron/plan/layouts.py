"""Every parallel layout of a recipe at a given world size that the trainer would accept.

A layout is a TP x PP (x VPP) x CP x DP factorisation of the world size plus an activation
recompute setting. Each one is written as the dotted overrides ``parse_cli`` takes, applied to a
copy of the recipe and kept only if the trainer's own checks accept it:
``platform.parallel.resolve_layout`` (sizes against the world, the global batch split),
``config.validate.validate_config`` (heads, query groups, FFN width and vocabulary divisible by
TP; layers by PP x VPP; the sequence length by the SP/CP divisor; the attention backend's CP
support) and ``training.data_plan.StepPlan`` (the image steps of joint training split too).
Nothing here re-implements those rules, so the sweep cannot drift from what a launch accepts.

Two rules are the sweep's own, because validation has no node size: TP stays inside a node
(TP all-reduces twice per layer in forward and backward; across InfiniBand that never pays),
and PP never exceeds the layer count (a stage needs a layer). ``runtime_problems`` is not
applied: it describes the machine the sweep runs on (a laptop has no CUDA for ``flex``), not the
cluster the layout is for.

Sequence parallelism is on whenever TP > 1 (it divides the norm/dropout activations by TP at no
extra communication volume) and off at TP = 1 (validation rejects it there). The recipe's
distributed-optimizer setting is kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from lumos_megatron.config.loader import ConfigError, set_value
from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.config.validate import validate_config
from lumos_megatron.platform.parallel import LayoutError, resolve_layout

RECOMPUTE_CHOICES = ("none", "selective", "full")
"""Activation recompute settings of a candidate: "none" is ``model.recompute_granularity``
None, the others are its values."""

MAX_VPP_OPTIONS = 3
"""Interleaving degrees tried per PP (the smallest divisors >= 2 of the layers per stage), so
with "no VPP" at most 4 options: the bubble gain shrinks as 1/VPP while p2p traffic grows."""


@dataclass(frozen=True)
class Candidate:
    """One layout the trainer accepts for the recipe at ``tp * pp * cp * dp`` GPUs."""

    tp: int
    """Tensor-parallel size (within a node)."""
    pp: int
    """Pipeline stages."""
    vpp: Optional[int]
    """Model chunks per pipeline rank (interleaved 1F1B), None without interleaving."""
    cp: int
    """Context-parallel size."""
    dp: int
    """Data-parallel size: the world divided by TP x PP x CP."""
    sequence_parallel: bool
    """Sequence parallelism (on exactly when TP > 1)."""
    use_distributed_optimizer: bool
    """ZeRO-1 optimizer-state sharding over DP x CP (the recipe's setting, kept)."""
    recompute: str
    """Activation recompute: "none", "selective" or "full" (``model.recompute_granularity``)."""
    overrides: Tuple[str, ...]
    """Dotted ``section.field=value`` overrides that turn the recipe into this layout, as
    ``parse_cli`` accepts them after ``--config RECIPE`` (a tuple, so the dataclass stays frozen)."""
    label: str
    """Short name for tables, e.g. ``TP2 PP2 VPP2 CP1 DP2 +SP full-recompute``."""

    @property
    def world_size(self) -> int:
        """GPUs the layout uses."""
        return self.tp * self.pp * self.cp * self.dp


@dataclass(frozen=True)
class RejectedLayout:
    """A factorisation of the world size that the recipe cannot run, and why."""

    tp: int
    """Tensor-parallel size."""
    pp: int
    """Pipeline stages."""
    vpp: Optional[int]
    """Interleaving degree, None without."""
    cp: int
    """Context-parallel size."""
    dp: int
    """Data-parallel size."""
    reason: str
    """The first check that refused it (the trainer's own message where it comes from one)."""

    @property
    def label(self) -> str:
        """Short name, as ``Candidate.label`` without SP and recompute."""
        return _layout_label(self.tp, self.pp, self.vpp, self.cp, self.dp)


def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _layout_label(tp: int, pp: int, vpp: Optional[int], cp: int, dp: int) -> str:
    vpp_part = f" VPP{vpp}" if vpp else ""
    return f"TP{tp} PP{pp}{vpp_part} CP{cp} DP{dp}"


def _recompute_of(cfg: LumosConfig) -> str:
    return cfg.model.recompute_granularity or "none"


def layout_overrides(tp: int, pp: int, vpp: Optional[int], cp: int) -> List[str]:
    """The parallel overrides of a layout (every size written, so the result does not depend on
    what the recipe had); SP follows TP."""
    return [
        f"parallel.tensor_model_parallel_size={tp}",
        f"parallel.pipeline_model_parallel_size={pp}",
        f"parallel.virtual_pipeline_model_parallel_size={vpp if vpp else 'none'}",
        f"parallel.context_parallel_size={cp}",
        f"parallel.sequence_parallel={'true' if tp > 1 else 'false'}",
    ]


def recompute_overrides(cfg: LumosConfig, recompute: str) -> List[str]:
    """Overrides that set activation recompute to ``recompute`` on ``cfg``. The recipe's
    ``recompute_num_layers`` stays with 'full' and is cleared otherwise (validation allows it
    only with 'full')."""
    if recompute not in RECOMPUTE_CHOICES:
        raise ValueError(f"recompute={recompute!r}; choose one of {RECOMPUTE_CHOICES}")
    out = [f"model.recompute_granularity={recompute}"]
    if recompute != "full" and cfg.model.recompute_num_layers is not None:
        out.append("model.recompute_num_layers=none")
    return out


def apply_overrides(cfg: LumosConfig, overrides: Sequence[str]) -> LumosConfig:
    """A deep copy of ``cfg`` with dotted ``key=value`` overrides applied (not validated)."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, _, value = item.partition("=")
        set_value(out, key.strip(), value)
    return out


def apply_candidate(cfg: LumosConfig, candidate: Candidate) -> LumosConfig:
    """The recipe ``cfg`` turned into ``candidate``'s layout (a copy)."""
    return apply_overrides(cfg, candidate.overrides)


def _check(cfg: LumosConfig, world_size: int) -> Optional[str]:
    """None when the trainer accepts ``cfg`` at ``world_size``, else why not (one line)."""
    from lumos_megatron.training.data_plan import StepPlan

    try:
        layout = resolve_layout(cfg, world_size)
        validate_config(cfg)
        StepPlan(cfg, layout.dp)  # joint training: the image steps must split as well
    except (LayoutError, ConfigError) as err:
        return str(err)
    return None


def _vpp_options(num_layers: int, pp: int) -> List[Optional[int]]:
    if pp < 2 or num_layers % pp:
        return [None]
    per_stage = num_layers // pp
    return [None] + [v for v in _divisors(per_stage) if v >= 2][:MAX_VPP_OPTIONS]


def _recompute_variants(cfg: LumosConfig, with_variants: bool) -> List[str]:
    own = _recompute_of(cfg)
    wanted = {own, "full", "none"} if with_variants else {own}
    return [r for r in RECOMPUTE_CHOICES if r in wanted]


def enumerate_layouts(cfg: LumosConfig, world_size: int, *, gpus_per_node: int = 8,
                      with_recompute_variants: bool = True
                      ) -> Tuple[List[Candidate], List[RejectedLayout]]:
    """(accepted candidates, rejected layouts) of ``cfg`` at ``world_size`` GPUs, both sorted.

    Every TP x PP x CP divisor chain of ``world_size`` (DP the rest) and every VPP option is
    tried; recompute variants (the recipe's own, plus "full" and "none" when
    ``with_recompute_variants``) multiply the accepted layouts only.
    """
    if world_size < 1 or gpus_per_node < 1:
        raise ValueError(f"world_size={world_size} and gpus_per_node={gpus_per_node} must be >= 1")
    num_layers = cfg.model.num_layers
    recomputes = _recompute_variants(cfg, with_recompute_variants)
    accepted: List[Candidate] = []
    rejected: List[RejectedLayout] = []
    for tp in _divisors(world_size):
        for pp in _divisors(world_size // tp):
            for cp in _divisors(world_size // (tp * pp)):
                dp = world_size // (tp * pp * cp)
                for vpp in _vpp_options(num_layers, pp):
                    reason = _sweep_rule(tp, pp, num_layers, gpus_per_node)
                    overrides = layout_overrides(tp, pp, vpp, cp)
                    if reason is None:
                        reason = _check(apply_overrides(cfg, overrides), world_size)
                    if reason is not None:
                        rejected.append(RejectedLayout(tp, pp, vpp, cp, dp, reason))
                        continue
                    accepted += _variants(cfg, world_size, overrides, recomputes, rejected,
                                          (tp, pp, vpp, cp, dp))
    order = {r: i for i, r in enumerate(RECOMPUTE_CHOICES)}
    accepted.sort(key=lambda c: (c.tp, c.pp, c.vpp or 0, c.cp, c.dp, order[c.recompute]))
    rejected.sort(key=lambda r: (r.tp, r.pp, r.vpp or 0, r.cp, r.dp, r.reason))
    return accepted, rejected


def _sweep_rule(tp: int, pp: int, num_layers: int, gpus_per_node: int) -> Optional[str]:
    """The sweep's own rules (validation knows no node size)."""
    if tp > gpus_per_node:
        return (f"TP={tp} spans nodes ({gpus_per_node} GPUs per node): tensor parallelism "
                "all-reduces every layer and must stay on NVLink")
    if pp > num_layers:
        return f"PP={pp} exceeds model.num_layers={num_layers}: a stage needs at least one layer"
    return None


def _variants(cfg: LumosConfig, world_size: int, overrides: List[str], recomputes: List[str],
              rejected: List[RejectedLayout], sizes: Tuple) -> List[Candidate]:
    """The recompute variants of one accepted layout (each re-checked)."""
    tp, pp, vpp, cp, dp = sizes
    out = []
    for recompute in recomputes:
        full = overrides + recompute_overrides(cfg, recompute)
        reason = _check(apply_overrides(cfg, full), world_size)
        if reason is not None:  # not expected: recompute only interacts with recompute_num_layers
            rejected.append(RejectedLayout(tp, pp, vpp, cp, dp, f"{recompute} recompute: {reason}"))
            continue
        sp = tp > 1
        label = (f"{_layout_label(tp, pp, vpp, cp, dp)}{' +SP' if sp else ''} "
                 f"{'no' if recompute == 'none' else recompute}-recompute")
        out.append(Candidate(tp=tp, pp=pp, vpp=vpp, cp=cp, dp=dp, sequence_parallel=sp,
                             use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
                             recompute=recompute, overrides=tuple(full), label=label))
    return out


def candidate_layouts(cfg: LumosConfig, world_size: int, *, gpus_per_node: int = 8,
                      with_recompute_variants: bool = True) -> List[Candidate]:
    """Every layout of ``cfg`` at ``world_size`` GPUs that resolves and validates, sorted by
    (TP, PP, VPP, CP, DP, recompute none < selective < full). See ``enumerate_layouts``."""
    return enumerate_layouts(cfg, world_size, gpus_per_node=gpus_per_node,
                             with_recompute_variants=with_recompute_variants)[0]


def rejected_layouts(cfg: LumosConfig, world_size: int, *, gpus_per_node: int = 8) -> List[RejectedLayout]:
    """The factorisations of ``world_size`` that ``cfg`` cannot run, each with its reason."""
    return enumerate_layouts(cfg, world_size, gpus_per_node=gpus_per_node,
                             with_recompute_variants=False)[1]


__all__ = ["Candidate", "MAX_VPP_OPTIONS", "RECOMPUTE_CHOICES", "RejectedLayout", "apply_candidate",
           "apply_overrides", "candidate_layouts", "enumerate_layouts", "layout_overrides",
           "recompute_overrides", "rejected_layouts"]
