"""The sharded state dict that dist_checkpointing saves and loads: one builder for both.

Keys follow Megatron-LM (``model`` or ``model0..`` per virtual stage, ``optimizer``,
``opt_param_scheduler``, ``iteration``, ``rng_state``) plus our ``train_state``,
``parallel_layout`` and ``run_config``. Tensors are identified by their ShardedTensor keys, which
are layout independent, so dist_checkpointing reshards between any TP/PP/DP layouts.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.distributed as dist

DISTOPT_FORMAT = "fully_reshardable"
"""TP/PP/DP-reshardable DistOpt format (the default ``fully_sharded_model_space`` fails to save
with ``flattened_range is not supported``, mapping.py:134; ``dp_reshardable`` only reshards DP)."""


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The bare LumosModel inside DDP/Float16 wrappers. Its ``sharded_state_dict`` must be used:
    the wrappers' inherited one prefixes ``module.`` and the keys no longer match."""
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def sharding_metadata() -> Dict[str, Any]:
    """``metadata`` for megatron's ``sharded_state_dict`` calls."""
    from megatron.core import parallel_state

    return {
        "distrib_optim_sharding_type": DISTOPT_FORMAT,
        # The default gathers the DistOpt state with ``.cuda()`` over NCCL (distrib_optimizer.py:1089);
        # the memory-efficient variant gathers over the gloo DP group, which is what exists on CPU.
        "distrib_optim_fully_reshardable_mem_efficient": not torch.cuda.is_available(),
        "chained_optim_avoid_prefix": True,
        "singleton_local_shards": False,
        "dp_cp_group": parallel_state.get_data_parallel_group(with_context_parallel=True),
    }


def model_keys(num_chunks: int) -> List[str]:
    """State-dict keys of the model chunks (Megatron-LM's convention)."""
    return ["model"] if num_chunks == 1 else [f"model{i}" for i in range(num_chunks)]


def model_sharded_state_dict(chunks, metadata: Dict[str, Any]) -> Dict[str, Any]:
    """``{model key: sharded state dict}`` of this rank's chunks."""
    return {key: unwrap(chunk).sharded_state_dict(metadata=metadata)
            for key, chunk in zip(model_keys(len(chunks)), chunks)}


def rng_sharded_object(rng_state: Dict[str, Any]):
    """This rank's RNG state as one shard of a ``[world]`` object (every rank keeps its own)."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", rng_state, (dist.get_world_size(),), (dist.get_rank(),),
                         replica_id=0)


def build_state_dict(chunks, optimizer, common: Dict[str, Any], *, is_loading: bool,
                     rng_state: Any = None) -> Dict[str, Any]:
    """The full sharded state dict; ``rng_state`` None leaves the RNG out (a load at another
    layout, where the saved per-rank states belong to other ranks)."""
    metadata = sharding_metadata()
    state = model_sharded_state_dict(chunks, metadata)
    state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=is_loading, metadata=metadata)
    state.update(common)
    if rng_state is not None:
        state["rng_state"] = rng_sharded_object(rng_state)
    return state


def save_strategy():
    """torch_dist writer, parallelised over the DP(+CP) group (each rank writes a share of the
    replicated tensors instead of DP rank 0 writing them all)."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

    strategy = get_default_save_sharded_strategy("torch_dist")
    group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    if group.size() > 1:
        strategy = FullyParallelSaveStrategyWrapper(strategy, group)
    return strategy
