"""Scaling-law experiments: ``scaling.ladder`` lays out a ladder of model sizes x budgets and
collects its finished runs into a table (docs/scaling_ladders.md); ``scaling.fit`` fits that table
(Hoffmann et al. 2022 Approaches 2 and 3, bootstrap intervals, compute-optimal allocation;
docs/scaling.md).

What a configuration costs is not here: parameter counts are ``models.parameter_counts`` and the
FLOPs model is the trainer's own, ``training.flops``; the trainer never imports this package.

Names are resolved on first access (``lazy_exports``), so the numpy/scipy fitting code can be used
without importing torch, which the ladder needs.
"""

from lumos_megatron.lazy_exports import lazy_getattr

_EXPORTS = {
    "ShapeRule": "lumos_megatron.scaling.ladder.shapes",
    "ladder_shapes": "lumos_megatron.scaling.ladder.shapes",
    "HParamRule": "lumos_megatron.scaling.ladder.hparam_rule",
    "run_hparams": "lumos_megatron.scaling.ladder.hparam_rule",
    "LadderSpec": "lumos_megatron.scaling.ladder.plan",
    "plan_ladder": "lumos_megatron.scaling.ladder.plan",
    "LaunchSpec": "lumos_megatron.scaling.ladder.launch",
    "write_ladder": "lumos_megatron.scaling.ladder.launch",
    "collect_run": "lumos_megatron.scaling.ladder.collect",
    "Approach3Fit": "lumos_megatron.scaling.fit.approach3",
    "Approach3Objective": "lumos_megatron.scaling.fit.objective",
    "FitOptions": "lumos_megatron.scaling.fit.pipeline",
    "RunsInputError": "lumos_megatron.scaling.fit.table",
    "bootstrap_approach3": "lumos_megatron.scaling.fit.bootstrap",
    "fit_approach2": "lumos_megatron.scaling.fit.approach2",
    "fit_approach3": "lumos_megatron.scaling.fit.approach3",
    "optimal_allocation": "lumos_megatron.scaling.fit.allocation",
    "read_runs_csv": "lumos_megatron.scaling.fit.table",
    "run_scaling_fit": "lumos_megatron.scaling.fit.pipeline",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
