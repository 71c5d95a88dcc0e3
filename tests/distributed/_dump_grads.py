"""Dump every parameter's full gradient after one forward/backward of one global batch.

Run by ``test_parallel_gradients.py``, as one process or under torchrun::

    python tests/distributed/_dump_grads.py OUT_DIR NAME[:ARG,ARG...] [NAME[:ARG,...] ...]

Each ``NAME:ARGS`` is one parallel layout (ARGS are command-line overrides of the tiny recipe,
comma separated, e.g. ``tp2:--tensor-model-parallel-size=2``). The layouts run one after the
other in the same processes (megatron's parallel state is torn down and rebuilt in between), which
saves a torchrun start per layout. For each, rank 0 writes ``OUT_DIR/NAME.pt``: a dict from the
layout-independent parameter name (global layer numbers) to the full fp32 gradient, i.e. DDP's
``main_grad`` after megatron's ``finalize_model_grads`` (DP/CP reduction, 1/tokens scaling),
with TP shards gathered and pipeline stages merged.

Written against the package's public pieces only (config, platform, model builder, DDP/optimizer
wrappers, batch iterator, forward step), so it follows whatever loss the forward step computes.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "examples" / "recipes" / "tiny_cpu.yaml"


def _gather_tp_shards(grad: torch.Tensor, dim: int, glu: bool) -> torch.Tensor:
    """Full tensor from this TP group's shards of ``grad`` along ``dim``.

    A SwiGLU fc1 shard is ``[gate_r; up_r]`` (see models.init._shard), so the full tensor is
    ``[gate_0 .. gate_{tp-1}; up_0 .. up_{tp-1}]``, not the plain concatenation of the shards.
    """
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(grad) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, grad.contiguous(), group=group)
    if not glu:
        return torch.cat(shards, dim=dim)
    halves = [shard.chunk(2, dim=dim) for shard in shards]
    return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=dim)


def _local_full_gradients(ddp_chunks, gated_linear_unit: bool) -> Dict[str, torch.Tensor]:
    """{global name: full gradient} of this rank's pipeline stage(s); TP-collective."""
    from megatron.core import parallel_state

    from lumos_megatron.models.init import global_parameter_names

    tp = parallel_state.get_tensor_model_parallel_world_size()
    out = {}
    for chunk in ddp_chunks:
        module = chunk.module
        names = global_parameter_names(module)
        for local_name, param in module.named_parameters():
            grad = getattr(param, "main_grad", None)
            grad = torch.zeros_like(param, dtype=torch.float32) if grad is None else grad.detach()
            grad = grad.float().clone()
            if tp > 1 and getattr(param, "tensor_model_parallel", False):
                glu = gated_linear_unit and local_name.endswith("mlp.linear_fc1.weight")
                grad = _gather_tp_shards(grad, param.partition_dim, glu)
            out[names[local_name]] = grad.cpu()
    return out


def run_layout(out_path: Path, overrides: List[str]) -> None:
    """One forward/backward of global batch 0 on the layout ``overrides`` describe; save grads."""
    from megatron.core import parallel_state

    from lumos_megatron.config import parse_cli
    from lumos_megatron.models.layer_spec import build_transformer_config
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.platform.distributed import init_distributed
    from lumos_megatron.platform.parallel import (
        initialize_parallel_state,
        resolve_layout,
        seed_model_parallel_rng,
    )
    from lumos_megatron.data.sources import build_data_streams
    from lumos_megatron.training.feed import DataFeed
    from lumos_megatron.training.optim import attach_schedule_hooks, build_optimizer, wrap_ddp
    from lumos_megatron.training.step import forward_step, run_forward_backward
    from lumos_megatron.vocab import LumosVocab

    cfg = parse_cli(["--config", str(TINY_RECIPE), *overrides])
    env = init_distributed()
    layout = resolve_layout(cfg, env.world_size)
    initialize_parallel_state(cfg, layout)
    seed_model_parallel_rng(cfg.train.seed)

    vocab = LumosVocab(vocab_size=cfg.model.vocab_size)
    config = build_transformer_config(cfg)
    from lumos_megatron.objective import build_objective

    chunks = wrap_ddp(cfg, config, build_model_chunks(cfg, config, build_objective(cfg, vocab).loss_head()))
    # The optimizer is never stepped; it supplies the loss-scale hook training uses.
    attach_schedule_hooks(config, chunks, build_optimizer(cfg, chunks))
    feed = DataFeed(cfg, vocab, build_data_streams(cfg, vocab), layout.dp,
                    parallel_state.get_data_parallel_rank(), parallel_state.get_context_parallel_rank(),
                    torch.device("cpu"))
    step = feed.step(0)
    iterators = [step.make_iterator() for _ in chunks]
    for chunk in chunks:
        chunk.train()
        chunk.zero_grad_buffer()
    run_forward_backward(partial(forward_step, objective=feed.objective), chunks, iterators, cfg,
                         step.num_microbatches)

    grads = _local_full_gradients(chunks, config.gated_linear_unit)
    # After the TP gather every TP/CP/DP replica of a stage holds the same full tensors; one
    # replica per stage contributes.
    owner = (parallel_state.get_tensor_model_parallel_rank() == 0
             and parallel_state.get_context_parallel_rank() == 0
             and parallel_state.get_data_parallel_rank() == 0)
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(grads if owner else {}, gathered, dst=0)
    if dist.get_rank() == 0:
        merged = {}
        for part in gathered:
            overlap = merged.keys() & part.keys()
            if overlap:
                raise RuntimeError(f"parameters reported by two stages: {sorted(overlap)[:3]}")
            merged.update(part)
        torch.save(merged, out_path)
    dist.barrier()


def main(argv: List[str]) -> int:
    """``OUT_DIR NAME[:ARGS] ...`` → one gradient file per layout (see module docstring)."""
    from lumos_megatron.platform.distributed import shutdown_distributed

    out_dir, specs = Path(argv[0]), argv[1:]
    try:
        for spec in specs:
            name, _, args = spec.partition(":")
            run_layout(out_dir / f"{name}.pt", [a for a in args.split(",") if a])
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":  # guard: dist_checkpointing-style spawns re-import __main__
    sys.exit(main(sys.argv[1:]))
