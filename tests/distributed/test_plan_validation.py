"""The planner's fake-CUDA trace against the same step run for real on the CPU.

For each layout, every rank runs ``plan.step_trace.trace_rank(fake=False)`` in a real gloo
process group: the training step of ``training.loop`` (model chunks, megatron DDP, optimizer,
forward/backward schedule, ``optimizer.step()``) under the planner's dispatch mode counting live
CPU tensor bytes. The planner (``plan.planner.plan_training``) traces its rank kinds on fake CUDA
in worker processes. The peaks and their parts must agree within 5 % (the acceptance bound; in
practice they are equal to the byte or within a few KB of gloo's buffers).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import TINY_RECIPE

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# The tiny recipe made a little longer, so that activations are a sizeable part of the peak.
BASE = ["--config", str(TINY_RECIPE), "data.seq_length=384", "data.mock_frames=3", "data.mock_grid=[8,8]"]
FIELDS = ("peak_bytes", "parameter_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_rank(rank: int, world_size: int, argv, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LUMOS_STRICT_CPU="1", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    from lumos_megatron.config import parse_cli
    from lumos_megatron.plan.step_trace import trace_rank

    report = trace_rank(parse_cli(argv), world_size, rank, f"rank {rank}", fake=False)
    results[rank] = {f: getattr(report, f) for f in FIELDS}
    dist.barrier()
    dist.destroy_process_group()


def real_run(argv, world_size: int):
    """{rank: measured fields} of a real CPU step on ``world_size`` gloo ranks."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_real_rank, args=(world_size, argv, _free_port(), results), nprocs=world_size,
                           start_method="spawn")
        return dict(results)


def fake_plan(argv, world_size: int):
    from lumos_megatron.config import parse_cli
    from lumos_megatron.plan.gpus import gpu_spec
    from lumos_megatron.plan.planner import plan_training

    return plan_training(argv, parse_cli(argv), world_size, gpu_spec("h100"), jobs=2)


@pytest.mark.parametrize("name,extra,world_size", [
    ("TP1", [], 1),
    ("TP2", ["--tensor-model-parallel-size", "2", "--sequence-parallel"], 2),
    ("PP2", ["--pipeline-model-parallel-size", "2"], 2),
    ("distopt DP2", ["--use-distributed-optimizer"], 2),
])
def test_fake_trace_matches_a_real_cpu_step(name, extra, world_size):
    argv = BASE + extra
    plan = fake_plan(argv, world_size)
    real = real_run(argv, world_size)
    assert plan["ranks"][0]["rank"] == 0
    for traced in plan["ranks"]:
        measured = real[traced["rank"]]
        for field in FIELDS:
            assert traced[field] == pytest.approx(measured[field], rel=0.05), (name, traced["role"], field)
        # Not a degenerate agreement: the step holds activations beyond the model state.
        assert measured["activation_bytes"] > 0.02 * measured["peak_bytes"]
