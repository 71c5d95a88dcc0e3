#!/usr/bin/env python
"""Planner benchmark: how long ``lumos-plan`` takes per rank kind, and the block-mask builders.

Usage::

    python tools/bench/plan_trace.py [--recipe RECIPE] [--seq-length 28672] [--world-size 8]
                                     [--extra section.field=value ...]

Two measurements, in one run:

* the trace: ``plan.planner.plan_training`` of the recipe at the given length (worst-case samples
  of exactly that many tokens) with one worker at a time, so each rank kind's wall time
  (process start, imports, model build, the fake step) is its own;
* the frame-causal block mask of one such sample, built by torch's eager ``create_block_mask``
  (the builder the data side used before the per-tile tables; the baseline) and by the per-tile
  tables (``models.attention.frame_block_tables``), with their peak RSS growth.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml"


def _segments(seq_length: int):
    """Segment ids [1, L] of the planner's worst-case video sample of ``seq_length`` tokens."""
    import torch

    from lumos_megatron.plan.worst_case import sample_frames, sample_shape
    from lumos_megatron.vocab import frame_block_length

    frames = sample_frames(seq_length, 7)
    (rows, cols), caption = sample_shape(seq_length, frames)
    seg = torch.zeros(1, seq_length, dtype=torch.long)
    pos = caption + 5
    for f in range(frames):
        n = frame_block_length(rows, cols)
        seg[0, pos: pos + n] = f + 1
        pos += n
    return seg


def _timed(fn):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20


def main(argv=None) -> int:
    """Run both measurements and print a markdown report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--seq-length", type=int, default=28672)
    p.add_argument("--world-size", type=int, default=8)
    p.add_argument("--extra", nargs="*", default=[], help="more recipe overrides")
    p.add_argument("--skip-eager-mask", action="store_true", help="skip the 1 GB eager baseline")
    args = p.parse_args(argv)

    from lumos_megatron.config import parse_cli
    from lumos_megatron.models.attention.flex import build_frame_causal_block_mask
    from lumos_megatron.plan.gpus import gpu_spec
    from lumos_megatron.plan.planner import plan_training

    recipe_argv = ["--config", args.recipe, f"data.seq_length={args.seq_length}", *args.extra]
    cfg = parse_cli(recipe_argv)
    print(f"# lumos-plan trace time, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print(f"recipe {Path(args.recipe).name}, seq_length {args.seq_length}, world size {args.world_size}\n")
    started = time.perf_counter()
    plan = plan_training(recipe_argv, cfg, args.world_size, gpu_spec("h100"), jobs=1)
    total = time.perf_counter() - started
    print("| rank kind | trace s (in worker) | peak GiB |")
    print("|---|---|---|")
    for rank in plan["ranks"]:
        print(f"| {rank['role']} | {rank['trace_seconds']:.1f} | {rank['peak_bytes'] / 2**30:.2f} |")
    print(f"\nwall time of the whole plan (workers one at a time, process starts included): {total:.1f} s\n")

    seg = _segments(args.seq_length)
    print("| block-mask builder | seconds | peak RSS growth GiB |")
    print("|---|---|---|")
    t, rss = _timed(lambda: build_frame_causal_block_mask(seg))
    print(f"| per-tile tables (ours) | {t:.3f} | {rss:.2f} |")
    if not args.skip_eager_mask:
        t, rss = _timed(lambda: build_frame_causal_block_mask(seg, compile=False))
        print(f"| torch create_block_mask, eager (baseline) | {t:.1f} | {rss:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
