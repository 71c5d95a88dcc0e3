"""Scaling: the model-FLOPs count of a Lumos training step (what the trainer's MFU and throughput
report), model accounting and scaling ladders (parameters, FLOPs per token, sizes x budgets,
collection of runs; docs/scaling_ladders.md) and scaling-law fitting of a table of runs (Hoffmann et al. 2022 Approaches 2 and 3, see
docs/scaling.md).

Names are resolved on first access (``lazy_exports``), so the numpy/scipy fitting code can be used
without importing torch, which the FLOPs count needs.
"""

from lumos_megatron.lazy_exports import lazy_getattr

_EXPORTS = {
    "StepFlops": "lumos_megatron.scaling.flops",
    "attention_pairs": "lumos_megatron.scaling.flops",
    "device_peak_tflops": "lumos_megatron.scaling.flops",
    "step_flops": "lumos_megatron.scaling.flops",
    "gpu_peak_tflops": "lumos_megatron.scaling.flops",
    "DataLayout": "lumos_megatron.scaling.model_accounting",
    "ParameterCounts": "lumos_megatron.scaling.model_accounting",
    "expected_mask_ratio": "lumos_megatron.scaling.model_accounting",
    "flops_per_token": "lumos_megatron.scaling.model_accounting",
    "parameter_counts": "lumos_megatron.scaling.model_accounting",
    "training_flops": "lumos_megatron.scaling.model_accounting",
    "ShapeRule": "lumos_megatron.scaling.ladder_shapes",
    "ladder_shapes": "lumos_megatron.scaling.ladder_shapes",
    "HParamRule": "lumos_megatron.scaling.hparam_rule",
    "run_hparams": "lumos_megatron.scaling.hparam_rule",
    "LadderSpec": "lumos_megatron.scaling.ladder",
    "plan_ladder": "lumos_megatron.scaling.ladder",
    "LaunchSpec": "lumos_megatron.scaling.ladder_output",
    "write_ladder": "lumos_megatron.scaling.ladder_output",
    "collect_run": "lumos_megatron.scaling.run_collect",
    "Approach3Fit": "lumos_megatron.scaling.fit_approach3",
    "Approach3Objective": "lumos_megatron.scaling.approach3_objective",
    "FitOptions": "lumos_megatron.scaling.fit_pipeline",
    "RunsInputError": "lumos_megatron.scaling.runs_table",
    "bootstrap_approach3": "lumos_megatron.scaling.bootstrap_fit",
    "fit_approach2": "lumos_megatron.scaling.isoflop",
    "fit_approach3": "lumos_megatron.scaling.fit_approach3",
    "optimal_allocation": "lumos_megatron.scaling.compute_optimal",
    "read_runs_csv": "lumos_megatron.scaling.runs_table",
    "run_scaling_fit": "lumos_megatron.scaling.fit_pipeline",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
