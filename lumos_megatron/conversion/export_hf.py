"""``export-hf``: a torch_dist checkpoint (any TP/PP, with or without optimizer state) → the
official Lumos-1 layout: sharded safetensors, their index and an official ``config.json``.

The global model tensors of the checkpoint are read one layer (or one block of vocabulary
rows) at a time and appended to shards whose headers were written up front, so memory stays
near one layer. Optimizer state, if any, is not read. fp32 → fp32 is bit-exact, and an
``import-hf`` of the result gives back the same checkpoint tensors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from lumos_megatron.checkpoint.integrity import verify_shard_files
from lumos_megatron.config.stored import read_run_config, resolve_checkpoint_dir
from lumos_megatron.conversion.errors import ConversionError
from lumos_megatron.conversion.hf_config import hf_config_from_model
from lumos_megatron.conversion.import_hf import HF_CONFIG_COPY
from lumos_megatron.conversion.output_dir import check_output, staged_output
from lumos_megatron.conversion.safetensors_io import (
    CONFIG_FILE,
    ShardedSafetensorsWriter,
    optional_template,
    parse_size,
)
from lumos_megatron.conversion.torch_dist_io import TorchDistReader
from lumos_megatron.conversion.weight_layout import (
    EMBEDDING,
    FINAL_NORM,
    HF_EMBEDDING,
    HF_FINAL_NORM,
    HF_OUTPUT_LAYER,
    LAYERS,
    OUTPUT_LAYER,
    STORED_DTYPES,
    DecoderShapes,
    hf_layer_key,
    megatron_layer_to_hf,
    vocab_row_blocks,
)

DTYPES = STORED_DTYPES  # export's --dtype choices: all of them
_TORCH_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _check_global_shapes(reader: TorchDistReader, s: DecoderShapes) -> None:
    expected = {EMBEDDING: (s.vocab, s.hidden), FINAL_NORM: (s.hidden,), OUTPUT_LAYER: (s.vocab, s.hidden)}
    for name, shape in s.megatron_layer_shapes().items():
        expected[LAYERS + name] = (s.num_layers, *shape)
    for key, shape in expected.items():
        actual = reader.shape(key)
        if actual != shape:
            raise ConversionError(f"{reader.directory}: {key} has shape {list(actual)}, {list(shape)} "
                                  f"expected from its run_config.yaml")


def _entries(s: DecoderShapes, dtype: torch.dtype) -> List[Tuple[str, Tuple[int, ...], torch.dtype]]:
    entries = [(HF_EMBEDDING, (s.vocab, s.hidden), dtype)]
    for layer in range(s.num_layers):
        for name, shape in s.hf_layer_shapes(qk_norm_rows=1).items():
            entries.append((hf_layer_key(layer, name), shape, dtype))
    entries.append((HF_FINAL_NORM, (s.hidden,), dtype))
    entries.append((HF_OUTPUT_LAYER, (s.vocab, s.hidden), dtype))
    return entries


def export_hf(load: str | Path, out: str | Path, *, iteration: Optional[int] = None, shard_size: str = "5GB",
              dtype: Optional[str] = None, force: bool = False, progress: bool = True) -> Path:
    """Write the official layout of checkpoint ``load`` to ``out``; returns ``out``.

    ``dtype`` None keeps the stored dtype. Raises :class:`ConversionError` or ``CheckpointError``
    (nothing is left at ``out``) on bad input.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    max_shard_bytes = parse_size(shard_size)
    out = Path(out)
    check_output(out, force)
    path = resolve_checkpoint_dir(load, iteration)
    verify_shard_files(path)
    cfg = read_run_config(path)
    reader = TorchDistReader(path)
    s = DecoderShapes.of(cfg.model)
    _check_global_shapes(reader, s)
    target = DTYPES[dtype] if dtype else reader.dtype(EMBEDDING)
    config = hf_config_from_model(cfg.model, _TORCH_DTYPE_NAMES[target],
                                  template=optional_template(path / HF_CONFIG_COPY))
    blocks = vocab_row_blocks(s.vocab, s.hidden, torch.empty((), dtype=target).element_size())

    def vocab_tensor(key: str, hf_key: str) -> None:
        for start, stop in blocks:
            writer.append(hf_key, reader.read(key, (start, 0), (stop - start, s.hidden)).to(target))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.num_layers + 3, desc="export-hf", unit="part", file=sys.stderr)
    try:
        with staged_output(out, force) as tmp:
            writer = ShardedSafetensorsWriter(tmp, _entries(s, target), max_shard_bytes)
            try:
                vocab_tensor(EMBEDDING, HF_EMBEDDING)
                _advance(bar, "embedding")
                for layer in range(s.num_layers):
                    for key, tensor in _official_layer(reader, layer, s).items():  # entries order
                        writer.append(key, tensor.to(target))
                    _advance(bar, f"layer {layer}")
                writer.append(HF_FINAL_NORM, reader.read(FINAL_NORM).to(target))
                _advance(bar, "final norm")
                vocab_tensor(OUTPUT_LAYER, HF_OUTPUT_LAYER)
                _advance(bar, "output layer")
                writer.close()
            except BaseException:
                writer.abort()
                raise
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    finally:
        if bar is not None:
            bar.close()
    return out


def _official_layer(reader: TorchDistReader, layer: int, s: DecoderShapes):
    """Official tensors of one layer, read from the checkpoint in one pass."""
    boxes = {LAYERS + name: ((layer,) + (0,) * len(shape), (1, *shape))
             for name, shape in s.megatron_layer_shapes().items()}
    tensors = reader.read_many(boxes)
    return megatron_layer_to_hf(lambda name: tensors[LAYERS + name][0], layer, s)


def _advance(bar, label: str) -> None:
    if bar is not None:
        bar.set_postfix_str(label)
        bar.update(1)
