"""Process-group bootstrap: torchrun, SLURM (srun-native) or a single process.

The launcher is detected from the environment:
- torchrun / torch.distributed.launch: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT`` (torchrun wins when both are present, e.g. torchrun inside an sbatch script);
- SLURM srun with one task per GPU: ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, the
  master address taken from the first host of ``SLURM_JOB_NODELIST`` and a port derived from the
  job id (both overridable with ``MASTER_ADDR``/``MASTER_PORT``);
- otherwise a single process (an in-memory store: no port is opened).

NCCL is used when CUDA is present, gloo otherwise.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # 'torchrun' | 'slurm' | 'single'


def first_host(nodelist: str) -> str:
    """First host name of a SLURM host-list expression, e.g. ``gpu[003-005,9],cpu1`` → ``gpu003``."""
    nodelist = nodelist.strip()
    if not nodelist:
        raise ValueError("empty SLURM node list")
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)
    if m is None:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, _, ranges = m.groups()
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int_env(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None


def detect_distributed_env(env: Optional[Mapping[str, str]] = None) -> DistributedEnv:
    """Read the launcher's environment (``os.environ`` by default) without initialising anything."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistributedEnv(
            rank=_int_env(env, "RANK"),
            world_size=_int_env(env, "WORLD_SIZE"),
            local_rank=_int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else 29500,
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
        return DistributedEnv(
            rank=_int_env(env, "SLURM_PROCID"),
            world_size=_int_env(env, "SLURM_NTASKS"),
            local_rank=_int_env(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            master_addr=env.get("MASTER_ADDR") or first_host(nodelist),
            # A job-specific port lets several jobs share a head node.
            master_port=_int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else 20000 + job_id % 40000,
            launcher="slurm",
        )
    return DistributedEnv(0, 1, 0, "127.0.0.1", 0, "single")


def default_backend() -> str:
    """NCCL when CUDA is available, gloo on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(env: Optional[DistributedEnv] = None, timeout_minutes: int = 30) -> DistributedEnv:
    """Initialise ``torch.distributed`` for this process (idempotent) and pick the device.

    On GPU the process binds to ``cuda:local_rank``; on CPU the megatron-core CPU compatibility
    layer is applied before anything else touches megatron.
    """
    env = env or detect_distributed_env()
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    else:
        from lumos_megatron.platform.cpu_compat import apply_cpu_compat

        apply_cpu_compat()
    if dist.is_initialized():
        return env
    timeout = timedelta(minutes=timeout_minutes)
    backend = default_backend()
    if env.launcher == "single":
        store = dist.HashStore()
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    else:
        init_method = f"tcp://{env.master_addr}:{env.master_port}"
        dist.init_process_group(backend, init_method=init_method, rank=env.rank,
                                world_size=env.world_size, timeout=timeout)
    return env


def shutdown_distributed() -> None:
    """Tear down megatron's parallel state and the default process group (safe to call twice)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
