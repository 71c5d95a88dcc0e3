"""Checkpoints: megatron.core.dist_checkpointing (torch_dist) in Megatron's directory convention.

``layout`` (directory names, atomic publish, ``latest`` file, keep-last) is pure Python; ``save``
and ``load`` need megatron and an initialised process group; ``dist_optimizer_fixes`` holds the
fixes for megatron-core 0.16.1's distributed-optimizer checkpoint bugs. Import submodules
directly: this package imports nothing heavy.
"""

from lumos_megatron.checkpoint.directory import CheckpointError

__all__ = ["CheckpointError"]
