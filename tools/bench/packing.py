#!/usr/bin/env python
"""Mixed-shape batches: padded vs length-grouped vs packed, side by side in one run.

Usage::

    python tools/bench/packing.py [--steps 200] [--skip-cpu-train] [--skip-plan]

Three parts, each comparing the strategies on the same samples:

1. **Planning statistics at 1B / 384p scale** (no model): a realistic mixed manifest (official
   crop sizes at 256p and 384p for 16:9, 4:3, 1:1, 3:4 and 9:16 sources, videos of 2-7 latent
   frames, ~30 % images, captions of 64-256 tokens), global batch 48 on DP 8, sequences of at most
   32,768 tokens. Each step is laid out exactly as the trainer lays it out
   (``training.step_layout.layout_step``): padding fraction, attention pairs computed per step
   (padding rows are causal text and cost pairs too), and the DP imbalance (max / mean of the
   ranks' planned FLOPs).
2. **Measured tokens/s on this CPU**: the tiny recipe trained on a scaled-down mix of the same
   kind (mock data, ``data.mock_layouts``), one run per strategy; tokens/s counts the samples'
   own tokens (what the model learns from) per second of step time.
3. **Planned peak memory** (``lumos-plan``) of the 1B 384p recipe's step at 28,672 tokens,
   unpacked and packed (one packed sequence per micro-batch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

from lumos_megatron.config import parse_cli
from lumos_megatron.data.length_grouping import LengthGroupedOrder
from lumos_megatron.data.video.crop import crop_sizes_for, select_crop_size
from lumos_megatron.markdown_table import markdown_table
from lumos_megatron.training.data_plan import StreamBatching
from lumos_megatron.training.flops import work_weights
from lumos_megatron.training.step_layout import layout_step
from lumos_megatron.vocab import video_sample_length

REPO = Path(__file__).resolve().parents[2]
RECIPE_1B = REPO / "examples" / "recipes" / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml"
SOURCE_ASPECTS = [(16, 9), (4, 3), (1, 1), (3, 4), (9, 16)]
SEQ, GBS, DP, MULTIPLE = 32768, 48, 8, 128


class Manifest:
    """Sample k: a (latent frames, H_l, W_l, caption tokens) drawn from (seed, k); lengths only."""

    def __init__(self, seed: int = 0, image_share: float = 0.3, grid_scale: int = 1):
        self.seed, self.image_share, self.grid_scale = seed, image_share, grid_scale
        self.grids = []
        for target in (256, 528):  # 256p (320x192 for 16:9) and 384p (672x384 for 16:9)
            sizes = crop_sizes_for(target)
            for w, h in SOURCE_ASPECTS:
                cw, ch = select_crop_size(w * 120, h * 120, sizes)
                self.grids.append((ch // 8 // grid_scale // 4 * 4 or 4, cw // 8 // grid_scale // 4 * 4 or 4))

    def shape(self, k: int):
        r = random.Random(self.seed * 1_000_003 + k)
        rows, cols = self.grids[r.randrange(len(self.grids))]
        frames = 1 if r.random() < self.image_share else r.randint(2, 7)
        return frames, rows, cols, r.randint(64, 256)

    def sample_length(self, k: int, max_latent_frames=None) -> int:
        frames, rows, cols, text = self.shape(k)
        return video_sample_length(text, frames, rows, cols)


def _pairs(lengths: List[int], padded_length: int, packed: bool) -> float:
    """Attention pairs a step's row computes: each sample's causal triangle (frame blocks add a
    few percent alike for every strategy), padding as causal text after it (packed: its own)."""
    if packed:
        pad = padded_length - sum(lengths)
        return sum(n * (n + 1) / 2 for n in lengths) + pad * (pad + 1) / 2
    return padded_length * (padded_length + 1) / 2


STRATEGIES = {
    "padded (Megatron order, pad to 128)": dict(grouped=False, packing=False),
    "length-grouped, padded": dict(grouped=True, packing=False),
    "packed, no grouping": dict(grouped=False, packing=True),
    "length-grouped + packed": dict(grouped=True, packing=True),
}


def planning_table(steps: int) -> List[Dict]:
    cfg = parse_cli(["--config", str(RECIPE_1B)])
    per_token, per_pair = work_weights(cfg)
    source = Manifest()
    rows = []
    for name, how in STRATEGIES.items():
        # One window of exactly the planned steps: every strategy sees the same samples.
        order = LengthGroupedOrder(source, GBS, steps, seed=0, salt=0) if how["grouped"] else None
        real = computed = pairs = real_pairs = 0.0
        imbalances = []
        stream = StreamBatching("video", 1 if how["packing"] else GBS // DP // 6, GBS, SEQ)
        for step in range(steps):
            indices = order.batch(step * GBS) if order else list(range(step * GBS, (step + 1) * GBS))
            layout = layout_step(stream, indices, source, DP, packing=how["packing"], multiple=MULTIPLE, divisor=2,
                                 max_latent_frames=7, fixed_length=False, flops_per_token=per_token,
                                 flops_per_pair=per_pair)
            imbalances.append(layout.dp_imbalance)
            computed += layout.computed_tokens
            for rank in layout.ranks:
                for mb in rank:
                    lengths = [source.sample_length(i) for i in mb.indices]
                    real += sum(lengths)
                    real_pairs += sum(n * (n + 1) / 2 for n in lengths)
                    if mb.packed:
                        pairs += _pairs(lengths, mb.seq_length, True)
                    else:
                        pairs += len(lengths) * _pairs(lengths, mb.seq_length, False)
        rows.append({"strategy": name, "padding_fraction": 1 - real / computed,
                     "attention_pairs_vs_real": pairs / real_pairs,
                     "dp_imbalance_mean": sum(imbalances) / len(imbalances), "dp_imbalance_max": max(imbalances),
                     "computed_tokens_per_step": computed / steps})
    return rows


def _scalars(tb: Path, tag: str) -> Dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def cpu_training_table(iters: int) -> List[Dict]:
    """The tiny recipe on a scaled-down mix (latent grids / 8: 256p 16:9 → 4x4 ... 384p → 8x12)."""
    layouts = sorted({(f, *g) for g in Manifest(grid_scale=8).grids for f in (1, 2, 3, 4)})
    common = [f"data.mock_layouts={json.dumps([list(x) for x in layouts]).replace(' ', '')}",
              "data.seq_length=640", "model.max_position_embeddings=1024", "train.global_batch_size=16",
              "data.pad_to_multiple=16", "ardf.max_latent_frames=4", "data.length_group_window=8"]
    arms = {"padded": ["train.micro_batch_size=2"],
            "length-grouped, padded": ["train.micro_batch_size=2", "data.length_grouped=true"],
            "length-grouped + packed": ["train.micro_batch_size=1", "data.length_grouped=true", "data.packing=true"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in arms.items():
            tb = Path(tmp) / name.replace(" ", "_").replace(",", "").replace("+", "")
            cmd = [sys.executable, "-m", "lumos_megatron.train", "--config", str(REPO / "examples/recipes/tiny_cpu.yaml"),
                   "--train-iters", str(iters), "--tensorboard-dir", str(tb), *common, *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            if proc.returncode:
                raise SystemExit(f"{name}: training failed\n{proc.stderr[-3000:]}")
            times, tokens, pad = (_scalars(tb, t) for t in ("iteration-time", "tokens", "data/padding-fraction"))
            steps = sorted(times)[1:]  # the first step includes one-time set-up
            real = sum(tokens[s] * (1 - pad[s]) for s in steps)
            rows.append({"strategy": name, "real_tokens_per_s": real / sum(times[s] for s in steps),
                         "computed_tokens_per_s": sum(tokens[s] for s in steps) / sum(times[s] for s in steps),
                         "padding_fraction": sum(pad[s] for s in steps) / len(steps)})
    return rows


def plan_table() -> List[Dict]:
    rows = []
    one = ["train.micro_batch_size=1", "data.image_micro_batch_size=1"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("unpacked, micro-batch 1 x 28,672", one),
                            ("packed, one 28,672-token sequence", [*one, "data.packing=true"])):
            out = Path(tmp) / "plan.json"
            cmd = [sys.executable, "-m", "lumos_megatron.plan", "--config", str(RECIPE_1B), "--world-size", "8",
                   "--json", str(out), "--quiet", "data.seq_length=28672", *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode not in (0, 3):  # 3: does not fit (still a plan)
                raise SystemExit(f"lumos-plan failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            ranks = json.loads(out.read_text())["ranks"]
            rows.append({"step": name, "peak_gib": max(r["peak_bytes"] for r in ranks) / 2**30})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="planned steps of part 1")
    parser.add_argument("--iters", type=int, default=8, help="training iterations per CPU arm")
    parser.add_argument("--skip-cpu-train", action="store_true")
    parser.add_argument("--skip-plan", action="store_true")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{datetime.date.today()}")
    print(f"\n## Planning, 1B recipe: global batch {GBS}, DP {DP}, <= {SEQ} tokens, {args.steps} steps")
    print(markdown_table(
        ["strategy", "padding", "attention pairs / samples' own", "DP imbalance mean", "max", "computed tokens/step"],
        [[r["strategy"], f"{r['padding_fraction']:.1%}", f"{r['attention_pairs_vs_real']:.2f}",
          f"{r['dp_imbalance_mean']:.3f}", f"{r['dp_imbalance_max']:.3f}", f"{r['computed_tokens_per_step']:,.0f}"]
         for r in planning_table(args.steps)]))
    if not args.skip_cpu_train:
        print(f"\n## Tiny model on this CPU, {args.iters} iterations per arm")
        print(markdown_table(["strategy", "samples' tokens/s", "computed tokens/s", "padding"],
                             [[r["strategy"], f"{r['real_tokens_per_s']:.0f}", f"{r['computed_tokens_per_s']:.0f}",
                               f"{r['padding_fraction']:.1%}"] for r in cpu_training_table(args.iters)]))
    if not args.skip_plan:
        print("\n## Planned peak memory (lumos-plan), 1B 384p recipe at 28,672 tokens")
        print(markdown_table(["step", "peak GiB"], [[r["step"], f"{r['peak_gib']:.2f}"] for r in plan_table()]))


if __name__ == "__main__":
    main()
