"""FLOPs and parameter models shared by the trainer's MFU report and the scaling-law tools."""

from lumos_megatron.scaling.flops import (
    StepFlops,
    attention_pairs,
    device_peak_tflops,
    step_flops,
)

__all__ = ["StepFlops", "attention_pairs", "device_peak_tflops", "step_flops"]
