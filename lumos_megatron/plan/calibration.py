"""What a CPU trace cannot observe, as explicit constants, and the fits / does-not-fit verdict.

A fake trace counts the live bytes of the tensors a step creates. A real GPU needs more than that,
and which SDPA kernel CUDA runs is decided by CUDA code a CPU build does not have. Each such
modelling choice is a named constant here, marked ``assumed`` until a GPU run measures it (the GPU
validation suite writes measured values to a calibration file; :func:`load_calibration` reads it
and the report says which figures are measured).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch

GIB = 2**30


@dataclass(frozen=True)
class Calibration:
    """The factors between a trace's live tensor bytes and what a GPU process needs."""

    allocator_overhead: float = 0.10
    """Fraction of the traced peak the PyTorch caching allocator holds on top of live tensors
    (rounding to blocks, fragmentation between differently sized activations). Assumed: 10 %
    is typical of Megatron runs with ``expandable_segments``; without them it can be 20-30 %."""
    cuda_context_bytes: int = int(0.6 * GIB)
    """CUDA context, cuBLAS/cuDNN handles and workspaces of one process. Assumed: ~0.6 GiB on
    Hopper with CUDA 12."""
    nccl_bytes_per_group: int = int(0.1 * GIB)
    """NCCL's buffers per communicator this rank takes part in (TP, PP, CP, DP, and megatron's
    combined groups). Assumed: 0.1 GiB (NCCL_BUFFSIZE 4 MiB x channels x peers, order of
    magnitude)."""
    flex_workspace_bytes: int = 0
    """FlexAttention's Triton kernels' scratch beyond the output and logsumexp the trace counts.
    Assumed: none (the kernels tile in shared memory)."""
    sdpa_masked_gqa_kernel: str = "math"
    """Which SDPA kernel CUDA takes for a masked call with grouped-query heads (``enable_gqa``).
    Assumed: the math kernel (the flash kernel takes no mask and the memory-efficient kernel no
    GQA), which keeps the [b, h, L, L] scores of every layer for backward."""
    sdpa_masked_kernel: str = "efficient"
    """Which SDPA kernel CUDA takes for a masked call without GQA. Assumed: memory-efficient,
    which keeps the mask as an additive [b, h, L, L] bias in the compute dtype."""
    measured: Dict[str, str] = field(default_factory=dict)
    """Fields measured on a GPU, with the device and date; the others are assumed."""

    def status(self, name: str) -> str:
        """``measured (...)`` or ``assumed`` for a field."""
        return f"measured ({self.measured[name]})" if name in self.measured else "assumed"


CALIBRATION_FILE_ENV = "LUMOS_PLAN_CALIBRATION"
"""Environment variable naming a calibration JSON (default: ``calibration.json`` next to this file)."""


def load_calibration(path: Optional[str] = None) -> Calibration:
    """The calibration in ``path`` (or ``$LUMOS_PLAN_CALIBRATION``, or the packaged file if one
    was recorded), else the assumed defaults. The file holds any subset of the fields plus
    ``measured``."""
    path = path or os.environ.get(CALIBRATION_FILE_ENV) or str(Path(__file__).with_name("calibration.json"))
    if not os.path.exists(path):
        return Calibration()
    data = json.loads(Path(path).read_text())
    known = {k: v for k, v in data.items() if k in Calibration.__dataclass_fields__}
    return Calibration(**known)


def communicator_count(tp: int, pp: int, cp: int, dp: int) -> int:
    """Communicators a rank holds NCCL buffers for: one per parallel dimension larger than one,
    plus megatron's combined model-parallel and data-parallel-with-CP groups."""
    groups = sum(1 for size in (tp, pp, cp, dp) if size > 1)
    return groups + (1 if tp * pp > 1 else 0) + (1 if cp > 1 and dp > 1 else 0)


@dataclass(frozen=True)
class Verdict:
    """Does a rank fit a GPU?"""

    traced_peak_bytes: int
    """Live tensor bytes at the traced peak."""
    required_bytes: int
    """Traced peak plus allocator overhead, CUDA context and NCCL buffers."""
    capacity_bytes: int
    """The GPU's usable memory."""
    fits: bool
    """required <= capacity."""
    headroom_bytes: int
    """capacity - required (negative: short by that much)."""
    calibration: str
    """``measured`` when every factor used was measured on a GPU, else ``assumed``."""

    def to_json(self) -> Dict:
        """JSON-serialisable dict."""
        return asdict(self)


def verdict(traced_peak_bytes: int, capacity_bytes: int, communicators: int, uses_flex: bool,
            calibration: Calibration) -> Verdict:
    """Apply ``calibration`` to a traced peak and compare with ``capacity_bytes``."""
    c = calibration
    required = (traced_peak_bytes * (1.0 + c.allocator_overhead) + c.cuda_context_bytes
                + communicators * c.nccl_bytes_per_group + (c.flex_workspace_bytes if uses_flex else 0))
    used = ["allocator_overhead", "cuda_context_bytes", "nccl_bytes_per_group"] + (
        ["flex_workspace_bytes"] if uses_flex else [])
    status = "measured" if all(name in c.measured for name in used) else "assumed"
    required = int(required)
    return Verdict(traced_peak_bytes, required, capacity_bytes, required <= capacity_bytes,
                   capacity_bytes - required, status)


def cuda_sdpa_kernel(masked: bool, gqa: bool, calibration: Calibration) -> str:
    """The SDPA kernel a CUDA run is assumed to take for a call of this kind."""
    if not masked:
        return "flash"
    return calibration.sdpa_masked_gqa_kernel if gqa else calibration.sdpa_masked_kernel


def _efficient_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA as CUDA's memory-efficient kernel computes it (same shapes and saved tensors): a
    boolean mask becomes an additive bias in the compute dtype; grouped K/V heads are expanded."""
    if enable_gqa and k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = attn_mask.to(q.dtype)
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, bias, True, dropout_p, is_causal and attn_mask is None, scale=scale)[0]
    return out


@contextlib.contextmanager
def sdpa_kernel_model(kernel: str, fake: bool, calibration: Optional[Calibration] = None) -> Iterator[str]:
    """Make the SDPA backend's calls take the modelled kernel's memory path for the trace.

    ``kernel``: ``auto`` (what CUDA is assumed to pick, see :func:`cuda_sdpa_kernel`), ``math`` or
    ``efficient``. A real CPU run (``fake`` False) always uses torch's math kernel, which is also
    what fake ``cuda`` tensors get from a CPU build.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not fake:
        with sdpa_kernel([SDPBackend.MATH]):
            yield "math"
        return
    if kernel not in ("auto", "math", "efficient"):
        raise ValueError(f"unknown SDPA kernel model {kernel!r}; choose auto, math or efficient")
    from lumos_megatron.inference import kv_cache
    from lumos_megatron.models.attention import sdpa as sdpa_module

    calibration = calibration or load_calibration()
    original = torch.nn.functional.scaled_dot_product_attention

    def modelled(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        chosen = kernel if kernel != "auto" else cuda_sdpa_kernel(attn_mask is not None, enable_gqa, calibration)
        if chosen == "efficient":
            return _efficient_sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, enable_gqa=enable_gqa)

    class ModelledFunctional:
        """``torch.nn.functional`` with SDPA taking the modelled kernel's path."""

        scaled_dot_product_attention = staticmethod(modelled)

        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

    # Training's SDPA backend and the KV-cache decoder are the two callers of SDPA with a mask.
    modules = (sdpa_module, kv_cache)
    previous = [m.F for m in modules]
    for m in modules:
        m.F = ModelledFunctional()
    try:
        yield kernel
    finally:
        for m, old in zip(modules, previous):
            m.F = old
