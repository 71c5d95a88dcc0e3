"""The GPU peak table: SKU and dtype lookup, the dtype a run is rated in (never fp32 against the
bf16 peak), and its use by MFU and by the ladder's GPU-hour estimate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lumos_megatron.training import gpu_peaks
from lumos_megatron.training.gpu_peaks import GPU_PEAKS, compute_dtype, device_peak_tflops, find_gpu

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200"), ("NVIDIA H200 NVL", "h200-nvl"), ("NVIDIA GH200 480GB", "gh200"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A100 80GB PCIe", "a100-80gb"), ("NVIDIA B200", "b200"),
    ("h100", "h100-sxm"), ("a100", "a100-80gb"), ("H100-PCIE", "h100-pcie")])
def test_device_names_and_short_names_find_their_sku(name, key):
    assert find_gpu(name).key == key


def test_every_sku_has_every_dtype_it_supports_and_dense_ratios():
    assert find_gpu("v100") is None and find_gpu("l40s") is None
    for gpu in GPU_PEAKS:
        # Tensor-core dense rates: fp8 = 2 x bf16 = 4 x tf32 (where fp8 exists); fp32 far below.
        assert gpu.bf16 == pytest.approx(2 * gpu.tf32, rel=0.01)
        assert gpu.fp32 < gpu.tf32 / 2
        if gpu.fp8 is not None:
            assert gpu.fp8 == pytest.approx(2 * gpu.bf16, rel=0.01)
    assert (find_gpu("h100").bf16, find_gpu("h100").fp32) == (989.4, 66.9)
    with pytest.raises(ValueError, match="no fp8"):
        find_gpu("a100").peak("fp8")
    with pytest.raises(ValueError, match="unknown compute dtype"):
        find_gpu("h100").peak("int8")


def test_an_fp32_run_is_rated_against_fp32_or_tf32_never_bf16(monkeypatch):
    assert compute_dtype("bf16") == "bf16"
    assert compute_dtype("fp32") == "fp32" and compute_dtype("fp32", tf32=True) == "tf32"
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    assert device_peak_tflops(0.0, "bf16") == (989.4, "h100-sxm dense bf16 peak")
    assert device_peak_tflops(0.0, "fp32") == (66.9, "h100-sxm dense fp32 peak")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    assert device_peak_tflops(0.0, "fp32") == (494.7, "h100-sxm dense tf32 peak")
    assert device_peak_tflops(0.0, "bf16")[0] == 989.4
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    assert device_peak_tflops(0.0, "bf16")[0] is None
    assert device_peak_tflops(123.0, "fp32") == (123.0, "logging.peak_tflops")


def test_ladder_gpu_hours_use_the_recipes_precision(tmp_path):
    from lumos_megatron.scaling.ladder.launch import LaunchSpec

    launch = LaunchSpec(tmp_path, gpu="h100")
    assert launch.peak_tflops("bf16") == 989.4 and launch.peak_tflops("fp32") == 66.9
    with pytest.raises(ValueError, match="unknown GPU 'v100'"):
        LaunchSpec(tmp_path, gpu="v100").peak_tflops("bf16")
    out = subprocess.run([sys.executable, "tools/scaling/make_ladder.py", "--base", "examples/recipes/tiny_cpu.yaml",
                          "--out", str(tmp_path / "l"), "--n-min", "1e4", "--n-max", "1e5", "--head-dim", "32",
                          "--tokens-per-param", "1", "--nodes", "1", "--gpus-per-node", "1", "--dry-run"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "66.9 TFLOP/s dense fp32 peak" in out.stdout  # tiny_cpu.yaml trains in fp32


def test_the_trainer_does_not_import_the_scaling_package():
    code = ("import sys, lumos_megatron.training.loop, lumos_megatron.plan.step_time; "
            "print(sorted(m for m in sys.modules if m.startswith('lumos_megatron.scaling')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert gpu_peaks.__doc__ and "datasheet" in gpu_peaks.__doc__.lower()
