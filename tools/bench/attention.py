#!/usr/bin/env python
"""Frame-causal attention benchmark: dense-mask SDPA vs causal SDPA vs FlexAttention block mask.

Usage::

    python tools/bench/attention.py [--device cpu|cuda] [--quick]

Every case is a real Lumos-1 layout built with ``build_video_sample`` (BOS + ~256 text tokens +
separator, video prefix, T frame blocks of ``3 + H_l*(W_l+1) + 1`` tokens, video end), right
padded with pad id 0 to a multiple of the block size (what fixed-length training batches do;
padding is causal text per docs/method.md §3). Backends, timed in the same run on the same q/k/v:

* ``sdpa-dense``: SDPA with the dense bool [B,1,L,L] frame-causal mask (what Lumos-1 does);
* ``sdpa-causal``: SDPA ``is_causal=True``, a lower bound that ignores intra-frame
  bidirectionality (it computes a *different* mask, so no error column);
* ``flex``: FlexAttention with the frame-causal BlockMask. CUDA: compiled, fwd and fwd+bwd.
  CPU: eager, forward only (PyTorch has no CPU backward; compiling on a small CPU host takes
  longer than the whole benchmark), and only up to ``--cpu-flex-max-len``.

TFLOP/s count only the FLOPs of *allowed* (q, kv) pairs, identically for every backend so rows
are comparable as useful-work rates: fwd = 4*B*H*L^2*d*density, fwd+bwd = 3.5 x fwd.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from lumos_megatron.models.attention.flex import (
    block_mask_stats,
    build_frame_causal_block_mask,
    frame_causal_flex_attention,
)
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.vocab import LumosVocab, build_video_sample, frame_block_length

FWD_BWD_FACTOR = 3.5  # backward ≈ 2.5x forward (dq, dk, dv and the recomputed P)


@dataclass(frozen=True)
class Case:
    """One benchmark layout: ``frames`` latent frames of ``grid`` = (H_l, W_l) after the prompt."""

    grid: tuple
    frames: int
    text_len: int = 256


CPU_CASES = [Case((16, 28), 2), Case((16, 28), 4), Case((16, 28), 8), Case((32, 56), 2)]
CPU_QUICK = [Case((8, 12), 4)]
# 48x84 latents (384x672 px): 4,032 codes, 3 + 48*85 + 1 = 4,084 tokens per frame block.
CUDA_CASES = [Case((48, 84), 1), Case((48, 84), 4), Case((48, 84), 7)]
CUDA_QUICK = [Case((48, 84), 1)]


def machine_name(device: torch.device) -> str:
    """Human-readable name of the machine the numbers come from."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"


def build_tokens(case: Case, vocab: LumosVocab, pad_multiple: int, gen: torch.Generator):
    """Padded [1, L] token tensor of one Lumos sample, and its frame-block size in tokens."""
    # Plain text ids strictly below every special/structural id (8196+), so none is rejected.
    text = torch.randint(100, 8000, (case.text_len,), generator=gen)
    h, w = case.grid
    codes = torch.randint(0, vocab.num_visual_codes, (case.frames, h, w), generator=gen)
    tokens, _ = build_video_sample(text, codes, 2, 12, vocab)
    length = -(-tokens.numel() // pad_multiple) * pad_multiple
    padded = torch.full((1, length), vocab.pad, dtype=torch.long)
    padded[0, : tokens.numel()] = tokens
    return padded, frame_block_length(h, w)


def mask_density(seg: torch.Tensor) -> float:
    """Allowed fraction of the L x L frame-causal mask, from segment ids [B, L] (no L^2 memory).

    Causal pairs are L(L+1)/2; each contiguous frame block of n tokens adds its n(n-1)/2
    above-diagonal pairs.
    """
    batch, length = seg.shape
    allowed = batch * length * (length + 1) / 2
    for b in range(batch):
        sizes = torch.bincount(seg[b])[1:].double()
        allowed += float((sizes * (sizes - 1) / 2).sum())
    return allowed / (batch * length * length)


def sync(device: torch.device) -> None:
    """Wait for queued device work so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn`` in ms over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def fwd_bwd(attn: Callable, q, k, v, grad_out) -> Callable[[], None]:
    """Closure running one forward + backward of ``attn`` with fresh leaf grads."""
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def run():
        for t in leaves:
            t.grad = None
        attn(*leaves).backward(grad_out)

    return run


def fmt(x: Optional[float], spec: str) -> str:
    """Format a number or 'n/a'."""
    return "n/a" if x is None else format(x, spec)


COLUMNS = [("L", 6), ("frames", 6), ("fblock", 6), ("backend", 11), ("mask ms", 8),
           ("fwd ms", 9), ("f+b ms", 9), ("density", 7), ("empty/full/part", 15),
           ("TF/s fwd", 8), ("TF/s f+b", 8), ("max err", 8)]


def row(values: List[str]) -> str:
    """One '|'-separated table row with the fixed column widths."""
    return "| " + " | ".join(v.rjust(w) for v, (_, w) in zip(values, COLUMNS)) + " |"


def run_case(case: Case, args, device: torch.device, dtype: torch.dtype, vocab: LumosVocab,
             gen: torch.Generator) -> List[str]:
    """Benchmark the three backends on one layout; returns table rows (and notes)."""
    tokens, fblock = build_tokens(case, vocab, args.block_size, gen)
    seg = frame_segment_ids(tokens, vocab).to(device)
    batch, length = seg.shape
    density = mask_density(seg.cpu())
    h, d = args.heads, args.head_dim
    q, k, v = (torch.randn(batch, h, length, d, generator=gen).to(device, dtype) for _ in range(3))
    grad_out = torch.randn(batch, h, length, d, generator=gen).to(device, dtype)
    fwd_flops = 4 * batch * h * length * length * d * density

    def tflops(ms, factor=1.0):
        return None if ms is None else fwd_flops * factor / (ms * 1e-3) / 1e12

    rows, notes = [], []

    def emit(name, mask_ms, f_ms, fb_ms, err, stats):
        sparsity = "/".join(f"{stats[key]:.2f}" for key in ("empty", "full", "partial"))
        rows.append(row([str(length), str(case.frames), str(fblock), name, fmt(mask_ms, ".1f"),
                         fmt(f_ms, ".2f"), fmt(fb_ms, ".2f"), f"{density:.3f}", sparsity,
                         fmt(tflops(f_ms), ".3g"), fmt(tflops(fb_ms, FWD_BWD_FACTOR), ".3g"),
                         fmt(err, ".1e")]))

    # Block mask first: its tile statistics describe the layout for every row.
    sync(device)
    t0 = time.perf_counter()
    block_mask = build_frame_causal_block_mask(seg, block_size=args.block_size)
    sync(device)
    block_ms = (time.perf_counter() - t0) * 1e3
    stats = block_mask_stats(block_mask)

    t0 = time.perf_counter()
    dense = mask_from_segment_ids(seg).unsqueeze(1)  # [B, 1, L, L], True = allowed
    sync(device)
    dense_ms = (time.perf_counter() - t0) * 1e3

    def sdpa_dense(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=dense)

    def sdpa_causal(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, is_causal=True)

    def flex(q_, k_, v_):
        return frame_causal_flex_attention(q_, k_, v_, block_mask)

    with torch.no_grad():
        reference = sdpa_dense(q, k, v).float()
    for name, attn, mask_ms in (("sdpa-dense", sdpa_dense, dense_ms),
                                ("sdpa-causal", sdpa_causal, 0.0),
                                ("flex", flex, block_ms)):
        f_ms = fb_ms = err = None
        if name == "flex" and device.type == "cpu" and length > args.cpu_flex_max_len:
            notes.append(f"  note: L={length}: flex skipped on CPU (eager flex materialises "
                         f"B*H*L^2 scores; raise --cpu-flex-max-len to run it)")
            emit(name, mask_ms, None, None, None, stats)
            continue
        try:
            with torch.no_grad():
                f_ms = time_ms(lambda: attn(q, k, v), device, args.warmup, args.repeats)
                if name != "sdpa-causal":
                    err = float((attn(q, k, v).float() - reference).abs().max())
            if device.type == "cuda" or name != "flex":
                fb_ms = time_ms(fwd_bwd(attn, q, k, v, grad_out), device, args.warmup,
                                args.repeats)
        except torch.cuda.OutOfMemoryError:
            notes.append(f"  note: L={length} {name}: CUDA out of memory")
            torch.cuda.empty_cache()
        emit(name, mask_ms, f_ms, fb_ms, err, stats)
    del dense, block_mask  # the closures above are done: free the masks before empty_cache
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows + notes


def main(argv: Optional[List[str]] = None) -> int:
    """Parse arguments, print the header and one table row per (layout, backend)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="one small layout (for tests)")
    parser.add_argument("--heads", type=int, help="attention heads (default 8 CPU / 16 CUDA)")
    parser.add_argument("--head-dim", type=int, help="head dim (default 64 CPU / 128 CUDA)")
    parser.add_argument("--block-size", type=int, default=128, help="flex tile size and padding")
    parser.add_argument("--warmup", type=int, help="untimed runs (default 2 CPU / 3 CUDA)")
    parser.add_argument("--repeats", type=int, help="timed runs, median reported "
                        "(default 5 CPU / 10 CUDA)")
    parser.add_argument("--cpu-flex-max-len", type=int, default=4096,
                        help="longest L for eager CPU flex (it materialises the scores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    args.heads = args.heads or (16 if on_cuda else 8)
    args.head_dim = args.head_dim or (128 if on_cuda else 64)
    args.warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 2)
    args.repeats = args.repeats or (10 if on_cuda else 5)
    if args.quick:
        args.warmup, args.repeats = min(args.warmup, 1), min(args.repeats, 2)
        cases = CUDA_QUICK if on_cuda else CPU_QUICK
    else:
        cases = CUDA_CASES if on_cuda else CPU_CASES

    print("# Frame-causal attention benchmark (tools/bench/attention.py)")
    print(f"# machine: {machine_name(device)}")
    print(f"# torch {torch.__version__} | python {platform.python_version()} | device {device} | "
          f"date {datetime.date.today().isoformat()}")
    print(f"# B=1 heads={args.heads} head_dim={args.head_dim} dtype={str(dtype).split('.')[-1]} "
          f"| warmup {args.warmup}, median of {args.repeats} | text 256 tokens, padded to a "
          f"multiple of {args.block_size} | tile {args.block_size}x{args.block_size}")
    print(f"# TFLOP/s count only allowed pairs, same for every backend: fwd = 4*B*H*L^2*d*density,"
          f" fwd+bwd = {FWD_BWD_FACTOR} x fwd")
    print("# fblock = tokens per frame block; empty/full/part = fractions of tiles in the flex "
          "block mask; max err = max abs diff of the fwd output vs sdpa-dense")
    if not on_cuda:
        print("# CPU: flex is eager and forward-only (no CPU backward in PyTorch) -> f+b n/a")
    print(row([name for name, _ in COLUMNS]))
    print(row(["-" * w for _, w in COLUMNS]).replace(" ", "-"))
    sys.stdout.flush()

    vocab = LumosVocab()
    gen = torch.Generator().manual_seed(args.seed)
    for case in cases:
        for line in run_case(case, args, device, dtype, vocab, gen):
            print(line)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
