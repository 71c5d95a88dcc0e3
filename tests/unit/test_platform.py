"""Platform layer: launcher detection, layout validation, the CPU compatibility module."""

import pytest
import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.platform.distributed import detect_distributed_env, first_host
from lumos_megatron.platform.parallel import LayoutError, num_microbatches, resolve_layout


def test_torchrun_env_wins_over_slurm():
    env = detect_distributed_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                  "MASTER_ADDR": "n1", "MASTER_PORT": "1234",
                                  "SLURM_PROCID": "0", "SLURM_NTASKS": "2"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == \
        ("torchrun", 3, 8, 1, "n1", 1234)


def test_slurm_env_takes_master_from_nodelist():
    env = detect_distributed_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                                  "SLURM_JOB_NODELIST": "gpu[007-009,012],login1",
                                  "SLURM_JOB_ID": "4242"})
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("slurm", 5, 16, 1)
    assert env.master_addr == "gpu007"
    assert env.master_port == 20000 + 4242
    assert detect_distributed_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                                   "SLURM_NODELIST": "node3", "MASTER_ADDR": "x",
                                   "MASTER_PORT": "99"}).master_addr == "x"


def test_single_process_env():
    env = detect_distributed_env({})
    assert (env.launcher, env.rank, env.world_size) == ("single", 0, 1)


@pytest.mark.parametrize("nodelist, host", [
    ("node1", "node1"), ("gpu[01-04]", "gpu01"), ("a[3,5-6],b1", "a3"), ("x-y[10]", "x-y10"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


def test_bad_env_integer_is_named():
    with pytest.raises(ValueError, match="SLURM_NTASKS"):
        detect_distributed_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "two"})


def test_layout_resolution_and_errors():
    cfg = parse_cli(["--tensor-model-parallel-size", "2", "--global-batch-size", "8",
                     "--micro-batch-size", "2", "model.num_attention_heads=2"])
    layout = resolve_layout(cfg, 4)
    assert (layout.tp, layout.pp, layout.cp, layout.dp) == (2, 1, 1, 2)
    assert num_microbatches(cfg, layout) == 2
    with pytest.raises(LayoutError) as err:
        resolve_layout(cfg, 3)
    assert str(err.value) == ("impossible parallel layout: TP=2 x PP=1 x CP=1 = 2 ranks does not "
                              "divide the world size 3")
    cfg.train.global_batch_size = 6
    with pytest.raises(LayoutError, match="global batch 6 is not a multiple of micro batch 2 x DP=2"):
        resolve_layout(cfg, 4)


def test_interleaved_schedule_needs_microbatches_multiple_of_pp():
    cfg = parse_cli(["--pipeline-model-parallel-size", "2", "--virtual-pipeline-model-parallel-size",
                     "2", "model.num_layers=4", "--global-batch-size", "3"])
    with pytest.raises(LayoutError, match="not a multiple of PP=2"):
        resolve_layout(cfg, 2)


def test_cpu_compat_maps_cuda_allocations_to_cpu():
    from lumos_megatron.platform.cpu_compat import _make_torch_proxy, _to_cpu_device, apply_cpu_compat

    assert apply_cpu_compat() is True and apply_cpu_compat() is True  # idempotent
    proxy = _make_torch_proxy()
    assert proxy.zeros(2, device="cuda").device.type == "cpu"
    assert proxy.tensor([1.0], device=torch.device("cuda", 0), pin_memory=True).device.type == "cpu"
    assert proxy.float32 is torch.float32 and proxy.Tensor is torch.Tensor
    assert _to_cpu_device("cuda:1") == torch.device("cpu") and _to_cpu_device("meta") == "meta"
    assert torch.cuda.current_device() == torch.device("cpu")
    torch.cuda.synchronize()  # a no-op on CPU


def test_cpu_compat_rng_emulates_cuda_generator():
    from lumos_megatron.platform.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    torch.cuda.manual_seed(123)
    state = torch.cuda.get_rng_state()
    a = torch.rand(3)
    torch.cuda.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_cpu_compat_rewrites_string_type_checks():
    from megatron.core.optimizer import clip_grads

    from lumos_megatron.platform.cpu_compat import apply_cpu_compat

    apply_cpu_compat()
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 2.0)
    # Without the rewrite this asserts on 'torch.cuda.FloatTensor'.
    clip_grads.clip_grad_by_total_norm_fp32([p], max_norm=1.0, total_norm=4.0)
    assert torch.allclose(p.grad, torch.full((4,), 2.0 * 1.0 / (4.0 + 1e-6)))
