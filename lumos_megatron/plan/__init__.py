"""Plan before spending GPU hours: one real training step traced at production shapes on a CPU.

``python -m lumos_megatron.plan`` (``lumos-plan``) runs the real model's training step on fake
CUDA tensors with a fake process group, one process per distinct rank kind, and reports per-rank
memory (parameters, gradient buffers, optimizer states, activations, the loss path), the step's
host syncs, copies off the device and fp32 activations, a verdict per GPU, a layout sweep and a
generation plan. See docs/planning.md.

Modules: ``fake_mode`` (every fake-mode patch), ``fake_device`` (the preloaded C++ device),
``step_audit`` (live bytes and findings), ``step_trace`` (one rank's step), ``worst_case`` (the
planned micro-batches), ``model_state`` (state bytes), ``calibration`` (what a CPU cannot see),
``rank_kinds``, ``worker``, ``cli``; the sweep: ``gpus``, ``layouts``, ``step_time``, ``sweep_table``.
"""
