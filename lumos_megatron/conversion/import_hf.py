"""``import-hf``: an official Lumos-1 / Chameleon checkpoint → a torch_dist checkpoint.

Output (``--out C``), a checkpoint root in Megatron's convention::

    C/latest_checkpointed_iteration.txt        "0"
    C/iter_0000000/                            torch_dist: model weights only (no optimizer)
    C/iter_0000000/run_config.yaml             a recipe: the model, checkpoint.load = C (written
                                               relative to the file: ${recipe_dir}/..), finetune
    C/iter_0000000/hf_config.json              the source config.json (export keeps its extras)

``lumos_megatron.train --load C`` (or ``--config C/iter_0000000/run_config.yaml``) starts training
from it at any TP/PP; ``lumos_megatron.inference.load_model(C)`` serves it. Every official tensor
is checked against the shapes its ``config.json`` implies before anything is written, then the
model is converted one layer at a time (each official tensor is read once).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from lumos_megatron.checkpoint import directory as ckpt_dir
from lumos_megatron.checkpoint.state import model_only_common_state
from lumos_megatron.config import ConfigError, LumosConfig, dump_config, validate_config
from lumos_megatron.config.recipe import RECIPE_DIR
from lumos_megatron.conversion.errors import ConversionError
from lumos_megatron.conversion.hf_config import model_config_from_hf, model_parallel_rows
from lumos_megatron.conversion.output_dir import check_output, staged_output
from lumos_megatron.conversion.safetensors_io import CONFIG_FILE, OfficialCheckpoint
from lumos_megatron.conversion.torch_dist_io import Chunk, TorchDistWriter, sharded_object_key
from lumos_megatron.conversion.vocab_growth import new_rows
from lumos_megatron.conversion.weight_layout import (
    EMBEDDING,
    FINAL_NORM,
    HF_EMBEDDING,
    HF_FINAL_NORM,
    HF_IGNORED_PREFIX,
    HF_OUTPUT_LAYER,
    LAYERS,
    LINEAR_MODULES,
    OUTPUT_LAYER,
    STORED_DTYPES,
    DecoderShapes,
    hf_layer_key,
    hf_layer_to_megatron,
    shared_qk_norm_row,
    vocab_row_blocks,
)
from lumos_megatron.vocab import LumosVocab

HF_CONFIG_COPY = "hf_config.json"
IMPORT_DTYPES = ("fp32", "bf16")
"""``--dtype`` choices of import (``weight_layout.STORED_DTYPES`` names)."""
"""Rows of the embedding and LM head are written in blocks of about this size."""


def parse_row_range(text: str) -> Tuple[int, int]:
    """``'A:B'`` → ``(A, B)`` (``--zero-head-rows``)."""
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConversionError(f"--zero-head-rows {text!r}: expected START:STOP, e.g. 4:8196") from None
    if not 0 <= start < stop:
        raise ConversionError(f"--zero-head-rows {text!r}: expected 0 <= START < STOP")
    return start, stop


def _check_tensors(src: OfficialCheckpoint, shapes: DecoderShapes, qk_rows: int, vocab: int) -> int:
    """Every expected key present with its shape, nothing unexpected; returns ignored keys."""
    expected = shapes.hf_shapes(qk_rows, vocab)
    present = src.keys()
    ignored = [k for k in present if k.startswith(HF_IGNORED_PREFIX)]
    unexpected = [k for k in present if k not in expected and not k.startswith(HF_IGNORED_PREFIX)]
    if unexpected:
        raise ConversionError(f"{src.directory}: unexpected key {unexpected[0]}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
                              + "; it does not belong to the Lumos decoder described by config.json")
    for key, shape in expected.items():
        actual = src.shape(key)  # raises "missing key" for an absent one
        if actual != shape:
            raise ConversionError(f"{key}: shape {list(actual)} in the checkpoint, {list(shape)} expected "
                                  f"from {CONFIG_FILE}")
    for layer in range(shapes.num_layers):  # small tensors: refuse distinct rows before writing
        for name in ("q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"):
            key = hf_layer_key(layer, f"self_attn.{name}")
            shared_qk_norm_row(src.read(key), key)
    return len(ignored)


def _resolve_vocab(source_vocab: int, target: Optional[int]) -> int:
    text_ids = LumosVocab.text_vocab_size
    if target is None:
        if source_vocab <= text_ids:
            raise ConversionError(
                f"vocabulary mismatch: the checkpoint has {source_vocab} ids, no room for visual codes "
                f"beyond the {text_ids} text ids (a Chameleon starting point?); pass "
                f"--target-vocab-size 129536 to grow it")
        target = source_vocab
    if target < source_vocab:
        raise ConversionError(f"--target-vocab-size {target} is smaller than the checkpoint's vocabulary "
                              f"({source_vocab}); shrinking is not supported")
    try:
        LumosVocab(vocab_size=target)
    except ValueError as err:
        raise ConversionError(f"--target-vocab-size {target}: {err}") from None
    return target


def _run_config(shapes_cfg, precision: str) -> LumosConfig:
    cfg = LumosConfig(model=shapes_cfg)
    cfg.train.precision = precision
    cfg.checkpoint.load = f"{RECIPE_DIR}/.."  # the checkpoint root, wherever it is moved
    cfg.checkpoint.finetune = True
    try:
        validate_config(cfg)
    except ConfigError as err:
        raise ConversionError(f"the imported model is not a valid Lumos configuration: {err}") from None
    return cfg


def import_hf(hf_dir: str | Path, out: str | Path, *, dtype: str = "fp32",
              target_vocab_size: Optional[int] = None, seed: int = 0,
              zero_head_rows: Optional[Tuple[int, int]] = None, force: bool = False,
              progress: bool = True) -> Path:
    """Convert ``hf_dir`` into the checkpoint root ``out``; returns the iteration directory.

    Raises :class:`ConversionError` (nothing is left at ``out``) on bad input.
    """
    if dtype not in IMPORT_DTYPES:
        raise ConversionError(f"--dtype {dtype!r}: expected one of {sorted(IMPORT_DTYPES)}")
    out = Path(out)
    check_output(out, force)
    src = OfficialCheckpoint(hf_dir)
    try:
        model = model_config_from_hf(src.config, source=str(src.directory / CONFIG_FILE))
        qk_rows = model_parallel_rows(src.config)
        shapes = DecoderShapes.of(model)
        source_vocab = model.vocab_size
        vocab = _resolve_vocab(source_vocab, target_vocab_size)
        ignored = _check_tensors(src, shapes, qk_rows, source_vocab)
        if zero_head_rows is not None and zero_head_rows[1] > vocab:
            raise ConversionError(f"--zero-head-rows {zero_head_rows[0]}:{zero_head_rows[1]} exceeds the "
                                  f"vocabulary ({vocab} rows)")
        if ignored:
            print(f"import-hf: ignoring {ignored} model.vqmodel.* tensors (the bundled VQ-GAN is not part "
                  "of the decoder)", file=sys.stderr)
        model = replace(model, vocab_size=vocab)
        cfg = _run_config(model, "bf16" if dtype == "bf16" else "fp32")
        writer = _plan(src, replace(shapes, vocab=vocab), source_vocab, STORED_DTYPES[dtype], seed, zero_head_rows)
        source = f"import-hf {src.directory.resolve()}"
        with staged_output(out, force) as tmp:
            iter_dir = ckpt_dir.checkpoint_dir(tmp, 0)
            iter_dir.mkdir()
            run_config = dump_config(cfg)
            with _PartProgress(writer, progress) as on_chunk:
                writer.write(iter_dir, model_only_common_state(run_config, source), on_chunk)
            (iter_dir / ckpt_dir.RUN_CONFIG_FILE).write_text(run_config)
            (iter_dir / HF_CONFIG_COPY).write_text(json.dumps(src.config, indent=2) + "\n")
            ckpt_dir.write_latest(tmp, 0)
    finally:
        src.close()
    return ckpt_dir.checkpoint_dir(out, 0)


def _plan(src: OfficialCheckpoint, s: DecoderShapes, source_vocab: int, dtype: torch.dtype, seed: int,
          zero_head_rows: Optional[Tuple[int, int]]) -> TorchDistWriter:
    writer = TorchDistWriter()
    element_size = torch.empty((), dtype=dtype).element_size()

    def vocab_rows(hf_key: str, kind: str, start: int, stop: int) -> torch.Tensor:
        parts = []
        if start < source_vocab:
            parts.append(src.read_rows(hf_key, start, min(stop, source_vocab)).to(dtype))
        if stop > source_vocab:
            parts.append(new_rows(kind, max(start, source_vocab), stop, source_vocab, s.hidden, seed).to(dtype))
        src.close()  # unmap what was read: resident file pages would otherwise add up to the model
        rows = torch.cat(parts) if len(parts) > 1 else parts[0]
        if kind == "output_layer" and zero_head_rows is not None:
            lo, hi = max(zero_head_rows[0], start), min(zero_head_rows[1], stop)
            if lo < hi:
                rows[lo - start: hi - start] = 0
        return rows

    def add_vocab_tensor(key: str, hf_key: str, kind: str, label: str) -> None:
        writer.add_tensor(key, (s.vocab, s.hidden), dtype)
        for start, stop in vocab_row_blocks(s.vocab, s.hidden, element_size):
            writer.add_chunk(Chunk(key, (start, 0), (stop - start, s.hidden),
                                   lambda a=start, b=stop: vocab_rows(hf_key, kind, a, b), label))

    add_vocab_tensor(EMBEDDING, HF_EMBEDDING, "embedding", "embedding")
    cache: Dict[str, object] = {"layer": None, "tensors": None}

    def layer_tensor(layer: int, name: str) -> torch.Tensor:
        if cache["layer"] != layer:  # one layer's tensors at a time, each official tensor read once
            cache["tensors"] = None
            cache["tensors"] = hf_layer_to_megatron(src.read, layer, s)
            cache["layer"] = layer
            src.close()
        return cache["tensors"][name].to(dtype).unsqueeze(0)

    layer_shapes = s.megatron_layer_shapes()
    for name, shape in layer_shapes.items():
        writer.add_tensor(LAYERS + name, (s.num_layers, *shape), dtype)
    for layer in range(s.num_layers):
        for name, shape in layer_shapes.items():
            writer.add_chunk(Chunk(LAYERS + name, (layer,) + (0,) * len(shape), (1, *shape),
                                   lambda n=layer, k=name: layer_tensor(n, k), f"layer {layer}"))
        for module in LINEAR_MODULES:
            writer.add_object(sharded_object_key(f"{LAYERS}{module}._extra_state", layer, s.num_layers), None)
    writer.add_tensor(FINAL_NORM, (s.hidden,), dtype)
    writer.add_chunk(Chunk(FINAL_NORM, (0,), (s.hidden,), lambda: src.read(HF_FINAL_NORM).to(dtype), "final norm"))
    add_vocab_tensor(OUTPUT_LAYER, HF_OUTPUT_LAYER, "output_layer", "output layer")
    return writer


class _PartProgress:
    """tqdm over the model's parts (embedding, each layer, final norm, LM head)."""

    def __init__(self, writer: TorchDistWriter, enabled: bool):
        self._left: Dict[str, int] = {}
        for chunk in writer.chunks:
            self._left[chunk.label] = self._left.get(chunk.label, 0) + 1
        self._enabled = enabled
        self._bar = None

    def __enter__(self):
        if self._enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self._left), desc="import-hf", unit="part", file=sys.stderr)
        return self._on_chunk

    def _on_chunk(self, chunk: Chunk) -> None:
        self._left[chunk.label] -= 1
        if self._bar is not None and self._left[chunk.label] == 0:  # the part is fully written
            self._bar.set_postfix_str(chunk.label)
            self._bar.update(1)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
