"""What a torch_dist checkpoint holds, read from its metadata only (no tensor is loaded).

``summarize(C)`` → a JSON-able dict: the model configuration, parameter counts (total, input
embedding, output layer, non-embedding, per group), the parallel layout it was saved with, the
iteration and consumed samples, the stored dtypes, the size on disk, and whether optimizer
state (and which kind) is present.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from lumos_megatron.checkpoint.directory import CheckpointError
from lumos_megatron.checkpoint.integrity import require_common_file, verify_shard_files
from lumos_megatron.units import si
from lumos_megatron.config.stored import read_run_config, resolve_checkpoint_dir
from lumos_megatron.conversion.torch_dist_io import TorchDistReader
from lumos_megatron.models.parameter_counts import parameter_group

def _read_common(path: Path) -> Dict[str, Any]:
    common_file = require_common_file(path)
    try:
        return torch.load(common_file, map_location="cpu", weights_only=False)
    except Exception as err:  # a damaged pickle
        raise CheckpointError(f"{common_file} cannot be read ({type(err).__name__}: {err})",
                              earlier_step=True) from None


def verify_checkpoint(path: str | Path, mode: str = "full") -> Dict[str, Any]:
    """``{"mode", "manifest", "problems"}``: the checkpoint's files against its manifest
    (``checkpoint/manifest.py``; a checkpoint without one reports ``manifest: false``)."""
    from lumos_megatron.checkpoint.manifest import read_manifest, verify

    has_manifest = read_manifest(path) is not None
    return {"mode": mode, "manifest": has_manifest, "problems": verify(path, mode) if has_manifest else []}


def summarize(checkpoint: str | Path, iteration: Optional[int] = None) -> Dict[str, Any]:
    """Summary of checkpoint ``checkpoint`` (a root, or one ``iter_*`` directory)."""
    path = resolve_checkpoint_dir(checkpoint, iteration)
    verify_shard_files(path)
    reader = TorchDistReader(path)
    cfg = read_run_config(path)
    common = _read_common(path)
    counts: Dict[str, int] = {}
    dtypes: Dict[str, int] = {}
    optimizer_keys = 0
    for key, md in reader.tensors().items():
        if key.startswith("optimizer."):
            optimizer_keys += 1
            continue
        n = math.prod(md.size)
        group = parameter_group(key)
        counts[group] = counts.get(group, 0) + n
        dtype = str(md.properties.dtype).replace("torch.", "")
        dtypes[dtype] = dtypes.get(dtype, 0) + n
    total = sum(counts.values())
    embedding, output = counts.get("embedding", 0), counts.get("output_layer", 0)
    train_state = common.get("train_state") or {}
    return {
        "path": str(path),
        "iteration": common.get("iteration"),
        "consumed_samples": train_state.get("consumed_samples"),
        "source": common.get("source"),
        "model": asdict(cfg.model),
        "parameters": {
            "total": total,
            "embedding": embedding,
            "output_layer": output,
            # Scaling-law convention: everything but the input embedding and the LM head.
            "non_embedding": total - embedding - output,
            "by_group": counts,
        },
        "dtypes": dtypes,
        "saved_parallel_layout": common.get("parallel_layout"),
        "optimizer_state": ("distributed" if common.get("distributed_optimizer") else "local")
        if optimizer_keys or common.get("opt_param_scheduler") else None,
        "weights_only": bool(common.get("model_only")),
        "size_on_disk_bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
    }


def _human(n: float, unit: str = "") -> str:
    return si(n, unit, ".2f")


def format_summary(summary: Dict[str, Any]) -> str:
    """Human-readable lines of :func:`summarize`'s result."""
    m, p = summary["model"], summary["parameters"]
    layout = summary["saved_parallel_layout"] or {}
    lines = [
        f"checkpoint       {summary['path']}",
        f"iteration        {summary['iteration']}  (consumed samples {summary['consumed_samples']})",
        f"model            {m['num_layers']} layers, hidden {m['hidden_size']}, ffn {m['ffn_hidden_size']}, "
        f"heads {m['num_attention_heads']} (kv {m['num_query_groups'] or m['num_attention_heads']}), "
        f"vocab {m['vocab_size']}, rope {m['rope_variant']} (theta {m['rotary_base']:g})",
        f"parameters       total {_human(p['total'])}, non-embedding {_human(p['non_embedding'])}, "
        f"embedding {_human(p['embedding'])}, output layer {_human(p['output_layer'])}",
        "  by group       " + ", ".join(f"{k} {_human(v)}" for k, v in p["by_group"].items()),
        "dtypes           " + ", ".join(f"{k} ({_human(v)} params)" for k, v in summary["dtypes"].items()),
        ("saved layout     " + (" x ".join(f"{k.upper()} {layout[k]}" for k in ("tp", "pp", "cp", "dp")
                                            if k in layout) or "unknown")),
        (f"optimizer state  {summary['optimizer_state'] or 'none'}"
         + ("  (weights only: loads as --finetune)" if summary["weights_only"] else "")),
        f"size on disk     {_human(summary['size_on_disk_bytes'], 'B')}",
    ]
    if summary.get("source"):
        lines.append(f"source           {summary['source']}")
    check = summary.get("verification")
    if check is not None:
        verdict = ("no manifest (saved before manifests existed, or imported): nothing to verify against"
                   if not check["manifest"] else
                   f"{len(check['problems'])} problem(s)" if check["problems"] else "every file matches its manifest")
        lines.append(f"verify ({check['mode']})    {verdict}")
    return "\n".join(lines)
