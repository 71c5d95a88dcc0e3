"""What a checkpoint holds besides model and optimizer tensors: train progress, RNG, layout.

The data order needs no state of its own: batches come from the deterministic ``SampleSchedule``
and every AR-DF random decision is a pure function of (seed, iteration, sample index), so
(iteration, consumed samples of each stream) is the complete sampler state and resume is exact
by construction.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch

CHECKPOINT_VERSION = 1
"""Bumped when the layout of what we store changes incompatibly."""


@dataclass(frozen=True)
class TrainProgress:
    """Where training stands: the resumable sampler state."""

    iteration: int
    """Optimizer steps completed."""
    consumed_samples: int
    """Global samples consumed so far, all streams together."""
    stream_samples: Dict[str, int] = field(default_factory=dict)
    """Samples consumed per stream ('video', and 'image' in joint training): where each
    stream's next batch starts. Empty means all of consumed_samples are 'video'."""


def layout_signature(layout) -> Dict[str, int]:
    """The parallel layout as plain ints (stored, and compared on load to decide whether the
    per-rank RNG states still belong to the same ranks)."""
    return {"tp": layout.tp, "pp": layout.pp, "cp": layout.cp, "dp": layout.dp,
            "vpp": layout.vpp or 0, "world_size": layout.world_size}


def capture_rng_state() -> Dict[str, Any]:
    """This rank's random generators: python, numpy, torch (CPU, and CUDA when present) and
    megatron's model-parallel RNG tracker streams."""
    from megatron.core import tensor_parallel

    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def common_state(progress: TrainProgress, layout, scheduler, run_config: str,
                 global_batch_size: int, distributed_optimizer: bool) -> Dict[str, Any]:
    """The non-tensor part of a checkpoint (identical on every rank; rank 0 writes it)."""
    return {
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": progress.iteration,
        "train_state": {**asdict(progress), "global_batch_size": global_batch_size},
        "opt_param_scheduler": scheduler.state_dict(),
        "parallel_layout": layout_signature(layout),
        "distributed_optimizer": bool(distributed_optimizer),
        "run_config": run_config,
    }


def model_only_common_state(run_config: str, source: str) -> Dict[str, Any]:
    """The non-tensor part of a checkpoint that holds model weights only (an imported one): no
    optimizer, LR schedule or RNG state. Loading it starts at iteration 0 with a fresh optimizer,
    as Megatron's ``--finetune`` does."""
    return {
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": 0,
        "train_state": {**asdict(TrainProgress(0, 0)), "global_batch_size": None},
        "parallel_layout": {"tp": 1, "pp": 1, "cp": 1, "dp": 1, "vpp": 0, "world_size": 1},
        "distributed_optimizer": False,
        "model_only": True,
        "source": source,
        "run_config": run_config,
    }


def is_model_only(common: Dict[str, Any]) -> bool:
    """Whether a checkpoint's common state says it holds model weights only."""
    return bool(common.get("model_only"))


def progress_from_common(common: Dict[str, Any]) -> TrainProgress:
    """``TrainProgress`` stored by ``common_state``."""
    train_state: Optional[Dict[str, Any]] = common.get("train_state")
    if train_state is None:
        raise KeyError("train_state")
    consumed = int(train_state["consumed_samples"])
    streams = {str(k): int(v) for k, v in (train_state.get("stream_samples") or {"video": consumed}).items()}
    return TrainProgress(int(train_state["iteration"]), consumed, streams)
