"""The model-FLOPs count of a Lumos training step: what the trainer's MFU and throughput report."""

from lumos_megatron.scaling.flops import (
    StepFlops,
    attention_pairs,
    device_peak_tflops,
    step_flops,
)

__all__ = ["StepFlops", "attention_pairs", "device_peak_tflops", "step_flops"]
