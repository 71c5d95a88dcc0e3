"""Model FLOPs of one Lumos training step, counted explicitly (not ``6 x params``).

Per token and layer (forward, multiply-add = 2 FLOPs):

* QKV projection ``2 h (n_q d + 2 n_kv d)``, output projection ``2 n_q d h``;
* SwiGLU MLP ``3 x 2 h f`` (gate, up, down).

Attention scores and the weighted sum cost ``4 d n_q`` per *allowed* (query, key) pair, so the
frame-causal mask enters through the number of allowed pairs (causal pairs plus the extra
bidirectional pairs inside each frame block), counted from the real batch.

The LM head counts what the objective needs (``Objective.lm_head_shape``): with AR-DF only the
loss rows against the visual columns (``2 h V_visual`` per loss row), otherwise every token
against the full vocabulary.
Backward is twice the forward; recomputation (activation checkpointing or the fused loss's chunk
recompute) is not model FLOPs and is not counted, as in Megatron's MFU convention.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Optional, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.config.validate import head_dim
from lumos_megatron.models.frame_mask import allowed_pairs
from lumos_megatron.objective import build_objective

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name substring; first match wins.
_GPU_PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("GH200", 989.0), ("B200", 2250.0),
                    ("A100", 312.0), ("L40S", 362.0), ("A10", 125.0), ("V100", 125.0))


def attention_pairs(segment_ids: torch.Tensor) -> float:
    """Allowed (query, key) pairs of the frame-causal mask summed over a batch of segment ids
    [B, L] (0 outside frames, k inside frame block k): causal pairs plus, per frame block of
    length n, the n(n-1)/2 keys after each query inside the block (``models.frame_mask``)."""
    return float(allowed_pairs(segment_ids).sum())


@dataclass(frozen=True)
class StepFlops:
    """Model FLOPs of one optimizer step, by part."""

    dense: float
    attention: float
    lm_head: float

    @property
    def total(self) -> float:
        """All model FLOPs of the step (forward + backward)."""
        return self.dense + self.attention + self.lm_head

    @property
    def non_embedding(self) -> float:
        """Without the LM head (DeepSeek LLM's ``M`` when counted per token)."""
        return self.dense + self.attention

    def per_token(self, tokens: float) -> "StepFlops":
        """The same parts divided by ``tokens``."""
        return StepFlops(self.dense / tokens, self.attention / tokens, self.lm_head / tokens)


def step_flops(cfg: LumosConfig, tokens: float, pairs: float, loss_rows: float) -> StepFlops:
    """FLOPs of a step that processed ``tokens`` tokens with ``pairs`` allowed attention pairs
    and ``loss_rows`` visual loss rows (all summed over the global batch)."""
    m = cfg.model
    d, h, f = head_dim(cfg), m.hidden_size, m.ffn_hidden_size
    n_q, n_kv = m.num_attention_heads, m.num_query_groups or m.num_attention_heads
    per_token_layer = 2 * h * (n_q * d + 2 * n_kv * d) + 2 * n_q * d * h + 3 * 2 * h * f
    dense = 3 * m.num_layers * per_token_layer * tokens
    attention = 3 * m.num_layers * 4 * d * n_q * pairs
    rows, columns = build_objective(cfg).lm_head_shape(tokens, loss_rows)
    lm_head = 3 * 2 * h * columns * rows
    return StepFlops(dense, attention, lm_head)


def measured_gemm_tflops(size: int = 1024, seconds: float = 0.3) -> float:
    """fp32 GEMM rate of this CPU process (TFLOP/s): the achievable peak MFU is measured
    against on CPUs, whose nominal peak depends on cores, threads and vector units."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: thread pool and caches
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size ** 3 * runs / (time.perf_counter() - start) / 1e12


def gpu_peak_tflops(device_name: str) -> Optional[Tuple[str, float]]:
    """(table key, dense bf16 peak TFLOP/s) of the first known GPU whose key is in
    ``device_name`` (case-insensitive: ``torch.cuda.get_device_name()`` or a short name such as
    ``h100``), or None for an unknown GPU."""
    for key, peak in _GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return key, peak
    return None


def device_peak_tflops(override: float = 0.0) -> Tuple[Optional[float], str]:
    """(peak TFLOP/s of one device for MFU, where it comes from): ``override`` when > 0, the
    dense bf16 peak of a known GPU, a measured fp32 GEMM rate on CPU, or None for an unknown
    GPU (MFU is then not reported)."""
    if override > 0:
        return override, "logging.peak_tflops"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        known = gpu_peak_tflops(name)
        if known is not None:
            return known[1], f"{known[0]} dense bf16 peak"
        return None, f"unknown GPU {name!r}; set logging.peak_tflops"
    return measured_gemm_tflops(), "measured CPU fp32 GEMM rate"
