"""GPU models the layout sweep plans for: memory, dense bf16 peak and link bandwidths.

Every bandwidth here is an ASSUMED constant, a nominal per-GPU link rate from the vendors' data
sheets, not a measurement:

* NVLink, per GPU and per direction: NVLink3 (A100) 300 GB/s, NVLink4 (H100, H200) 450 GB/s,
  NVLink5 (B200) 900 GB/s;
* InfiniBand, one NIC per GPU: NDR 400 Gb/s = 50 GB/s (H100, H200, B200 nodes), HDR 200 Gb/s =
  25 GB/s (A100 nodes).

Collectives achieve less than the link rate (protocol overhead, ring/tree latency, small
buckets): ``ACHIEVED_FRACTION`` scales every link and is itself assumed (0.7) until a multi-GPU
run measures the bus bandwidth (nccl-tests ``busbw``) on the target cluster.

Memory is the capacity torch reports for the card (``torch.cuda.get_device_properties(i).
total_memory``, the "total capacity" of torch's out-of-memory message), which is below the
marketing size because part of the HBM is reserved (ECC, driver): an "80 GB" H100 SXM reports
about 79.1 GiB. The values are those reported figures rounded down to 0.05 GiB; the CUDA
context (a few hundred MiB) still comes off them at run time, which the planner's headroom is
for. The bf16 dense peaks are read from the trainer's own table (``training.gpu_peaks``), so MFU
reported by training and the step times estimated here use the same peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from lumos_megatron.training.gpu_peaks import find_gpu

GIB = 2 ** 30

ACHIEVED_FRACTION = 0.7
"""Assumed fraction of a nominal link rate that a collective achieves (bus bandwidth / link
rate); replace with a measured nccl-tests busbw ratio once a multi-GPU run is available."""


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model and the node it comes in (all bandwidths nominal and assumed)."""

    name: str
    """Short name, the key of ``GPUS`` (``h100``, ``h200``, ``a100``, ``b200``)."""
    memory_bytes: int
    """Device memory torch reports (``total_memory``), bytes: what per-rank peaks are compared to."""
    bf16_dense_tflops: float
    """Dense bf16 tensor-core peak, TFLOP/s (the trainer's MFU table, ``training.gpu_peaks``)."""
    nvlink_gbps: float
    """NVLink bandwidth per GPU and direction, GB/s (nominal, assumed): intra-node collectives."""
    ib_gbps_per_gpu: float
    """InfiniBand bandwidth per GPU (one NIC each), GB/s (nominal, assumed): inter-node traffic."""
    gpus_per_node: int
    """GPUs sharing one NVLink domain (an HGX/DGX node)."""

    def link_gbps(self, spans_nodes: bool) -> float:
        """Nominal bandwidth (GB/s) of a group that does / does not leave the node."""
        return self.ib_gbps_per_gpu if spans_nodes else self.nvlink_gbps


def _peak(key: str) -> float:
    """Dense bf16 peak of ``key`` from the trainer's table (one source for both)."""
    found = find_gpu(key)
    if found is None:  # the table lost a GPU this module lists: a programming error
        raise KeyError(f"training.gpu_peaks has no entry for {key!r}")
    return found.bf16


GPUS: Dict[str, GpuSpec] = {
    # 80 GB HBM3 SXM: torch reports ~79.1 GiB (84.9e9 bytes).
    "h100": GpuSpec("h100", int(79.10 * GIB), _peak("H100"), 450.0, 50.0, 8),
    # 141 GB HBM3e: torch reports ~139.8 GiB (150.1e9 bytes).
    "h200": GpuSpec("h200", int(139.80 * GIB), _peak("H200"), 450.0, 50.0, 8),
    # 80 GB HBM2e SXM: torch reports ~79.15 GiB (85.0e9 bytes); HDR InfiniBand nodes.
    "a100": GpuSpec("a100", int(79.15 * GIB), _peak("A100"), 300.0, 25.0, 8),
    # 180 GB HBM3e: the device reports ~178.35 GiB (191.5e9 bytes).
    "b200": GpuSpec("b200", int(178.35 * GIB), _peak("B200"), 900.0, 50.0, 8),
}


def gpu_spec(name: str) -> GpuSpec:
    """The ``GpuSpec`` called ``name`` (case-insensitive); ValueError listing the choices."""
    key = name.strip().lower()
    if key not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; choose one of {', '.join(sorted(GPUS))}")
    return GPUS[key]


__all__ = ["ACHIEVED_FRACTION", "GIB", "GPUS", "GpuSpec", "gpu_spec"]
