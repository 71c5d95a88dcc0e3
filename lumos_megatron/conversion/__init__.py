"""Checkpoint conversion between the official Lumos-1 layout and our torch_dist checkpoints.

The official release is a Hugging Face directory (Chameleon-style ``config.json`` plus
safetensors, one file or sharded with ``model.safetensors.index.json``); training writes
megatron-core ``torch_dist`` checkpoints. Modules, from the formats up:

* ``hf_config``      official ``config.json`` ⇄ our ``ModelConfig`` (and what is refused);
* ``weight_layout``  per-tensor mapping: QKV fused per query group, SwiGLU gate/up fused,
                     the head-shared QK-norm, layer-stacked megatron keys;
* ``safetensors_io`` lazy reading of official files, streaming writing of sharded safetensors;
* ``torch_dist_io``  streaming writing and sliced reading of torch_dist (DCP) checkpoints;
* ``vocab_growth``   seeded rows for growing a 65,536-id Chameleon starting point;
* ``import_hf`` / ``export_hf`` / ``inspect_checkpoint``  the three tools.

Every tool reads one tensor (or row block) at a time and writes it before reading the next, so
memory stays near one layer whatever the model size. Bad input raises :class:`ConversionError`
with one line naming the key or file; the command-line front ends turn it into exit status 2.
Import submodules directly: this package imports nothing heavy.
"""

from lumos_megatron.conversion.errors import ConversionError

__all__ = ["ConversionError"]
