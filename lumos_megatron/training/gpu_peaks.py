"""Peak dense throughput of the GPUs we rate MFU against, per SKU and compute dtype: the one table.

Every value is a **dense** (no structured sparsity) tensor-core peak in TFLOP/s from the vendor's
data sheet; where a sheet prints only the 2:4-sparse figure (marked * there), the dense value is
half of it. ``fp32`` is the CUDA-core (non-tensor) FP32 rate, which is what a plain fp32 matmul
gets when TF32 is off (torch's default for matmuls since 1.12); ``tf32`` applies when
``torch.backends.cuda.matmul.allow_tf32`` is on. A100 has no FP8 units (``None``).

Sources (NVIDIA data sheets):

* H100 SXM5 / PCIe: "NVIDIA H100 Tensor Core GPU Architecture" whitepaper (2022), peak-rate
  table: FP32 66.9 / 51.2, TF32 494.7 / 378, BF16 989.4 / 756, FP8 1978.9 / 1513 (dense).
* H100 NVL: "NVIDIA H100 Tensor Core GPU" datasheet (2023): FP32 60, TF32 835*, BF16 1671*, FP8 3341*.
* H200 SXM / NVL: "NVIDIA H200 Tensor Core GPU" datasheet (2024): SXM the H100 SXM5 rates; NVL
  the H100 NVL rates.
* GH200: "NVIDIA GH200 Grace Hopper Superchip" datasheet: the H100 SXM5 rates.
* A100 40 GB / 80 GB (SXM and PCIe): "NVIDIA A100 Tensor Core GPU" datasheet (2021): FP32 19.5,
  TF32 156 (312*), BF16 312 (624*), no FP8.
* B200: "NVIDIA HGX B200" datasheet (2024), 8 GPUs: FP32 600, TF32 18 000*, BF16 36 000*,
  FP8 72 000*; per GPU dense: FP32 75, TF32 1125, BF16 2250, FP8 4500.

``find_gpu`` accepts a table key (``h100-sxm``), a short alias (``h100``: the SXM part, ``a100``:
the 80 GB part) or a ``torch.cuda.get_device_name()`` string (``NVIDIA H100 PCIe``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

ComputeDtype = Literal["bf16", "fp8", "tf32", "fp32"]
COMPUTE_DTYPES = ("bf16", "fp8", "tf32", "fp32")


@dataclass(frozen=True)
class GpuPeaks:
    """Dense peaks of one GPU SKU, TFLOP/s."""

    key: str
    """Table key (lower case, ``<family>-<form factor or memory>``)."""
    matches: Tuple[str, ...]
    """Substrings of ``torch.cuda.get_device_name()`` (lower case) that identify this SKU; all must occur."""
    bf16: float
    fp8: Optional[float]
    tf32: float
    fp32: float

    def peak(self, dtype: ComputeDtype) -> float:
        """Dense peak of ``dtype``; ValueError when the GPU has no such units."""
        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown compute dtype {dtype!r}; choose {', '.join(COMPUTE_DTYPES)}")
        value = getattr(self, dtype)
        if value is None:
            raise ValueError(f"{self.key} has no {dtype} tensor cores")
        return value


# Most specific first: "h100 pcie" must match before "h100".
GPU_PEAKS: Tuple[GpuPeaks, ...] = (
    GpuPeaks("h100-pcie", ("h100", "pcie"), 756.0, 1513.0, 378.0, 51.2),
    GpuPeaks("h100-nvl", ("h100", "nvl"), 835.5, 1670.5, 417.5, 60.0),
    GpuPeaks("h200-nvl", ("h200", "nvl"), 835.5, 1670.5, 417.5, 60.0),
    GpuPeaks("gh200", ("gh200",), 989.4, 1978.9, 494.7, 66.9),
    GpuPeaks("h200", ("h200",), 989.4, 1978.9, 494.7, 66.9),
    GpuPeaks("h100-sxm", ("h100",), 989.4, 1978.9, 494.7, 66.9),
    GpuPeaks("a100-40gb", ("a100", "40gb"), 312.0, None, 156.0, 19.5),
    GpuPeaks("a100-80gb", ("a100",), 312.0, None, 156.0, 19.5),
    GpuPeaks("b200", ("b200",), 2250.0, 4500.0, 1125.0, 75.0),
)

#: Short names accepted wherever a GPU is named on a command line.
ALIASES: Dict[str, str] = {"h100": "h100-sxm", "a100": "a100-80gb", "h200-sxm": "h200", "a100-40": "a100-40gb",
                           "a100-80": "a100-80gb"}


def find_gpu(name: str) -> Optional[GpuPeaks]:
    """The table entry for a key, alias or device name (case-insensitive); None when unknown."""
    wanted = ALIASES.get(name.strip().lower(), name.strip().lower())
    for entry in GPU_PEAKS:
        if entry.key == wanted:
            return entry
    for entry in GPU_PEAKS:
        if all(m in wanted for m in entry.matches):
            return entry
    return None


def compute_dtype(precision: str, tf32: bool = False) -> ComputeDtype:
    """The tensor-core dtype a run's matmuls use: ``bf16`` for bf16 training; for fp32, ``tf32``
    when TF32 matmuls are allowed, else ``fp32``."""
    if precision == "bf16":
        return "bf16"
    if precision == "fp32":
        return "tf32" if tf32 else "fp32"
    raise ValueError(f"unknown precision {precision!r}")


def measured_gemm_tflops(size: int = 1024, seconds: float = 0.3) -> float:
    """fp32 GEMM rate of this CPU process (TFLOP/s): the achievable peak MFU is measured
    against on CPUs, whose nominal peak depends on cores, threads and vector units."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool and caches
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size ** 3 * runs / (time.perf_counter() - start) / 1e12


def device_peak_tflops(override: float = 0.0, precision: str = "bf16") -> Tuple[Optional[float], str]:
    """(peak TFLOP/s of one device for MFU, where it comes from): ``override`` when > 0; on a
    known GPU the dense peak of the dtype the run computes in (``compute_dtype`` of ``precision``
    and torch's TF32 switch: an fp32 run is never rated against the bf16 peak); a measured fp32
    GEMM rate on CPU; or None for an unknown GPU (MFU is then not reported)."""
    import torch

    if override > 0:
        return override, "logging.peak_tflops"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        known = find_gpu(name)
        if known is None:
            return None, f"unknown GPU {name!r}; set logging.peak_tflops"
        dtype = compute_dtype(precision, torch.backends.cuda.matmul.allow_tf32)
        return known.peak(dtype), f"{known.key} dense {dtype} peak"
    return measured_gemm_tflops(), "measured CPU fp32 GEMM rate"
