"""Collect training runs into the CSV a scaling-law fit reads (one row per run, or per evaluation).

    lumos-collect RUN_DIR [RUN_DIR ...] --out runs.csv [--per-eval]
        [--loss final|smoothed] [--smooth-last K] [--size-by non-embedding|total]
        [--text-tokens T --frames F --grid H W]

(also ``python tools/scaling/collect.py``.) A RUN_DIR is a ladder run's directory (lumos-ladder's
DIR/<run>, the launcher's OUT): TensorBoard events under RUN_DIR/tensorboard and its configuration
from checkpoints/iter_*/run_config.yaml, run_config.yaml or recipe.yaml (docs/scaling_ladders.md).
Columns: name, params (the ladder's size measure, see size_by), size_by, non_embedding_params,
total_params, tokens, loss, loss_source (validation | train), flops (our model FLOPs reached),
budget (the ladder's label, on the final row of a finished run), loss_final, loss_smoothed,
supervised_tokens, iteration, train_iters, evaluations, run, run_dir. --size-by overrides the
ladder's measure (default for runs no ladder planned: total). Unusable runs are reported on stderr
and skipped; a run that stopped before its planned iterations is collected with a warning and no
budget; exit status 2 when no run gives a row.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Optional, Sequence

from lumos_megatron.cli.base import CommandParser, fail, run

PROG = "lumos-collect"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``lumos-collect``."""
    p = CommandParser(PROG, __doc__.split("\n\n")[0], examples=[
        "lumos-collect runs/ladder/*/ --out runs.csv",
        "lumos-collect runs/ladder/*/ --out runs_per_eval.csv --per-eval --loss smoothed --smooth-last 5",
        "lumos-collect runs/webvid-* --out runs.csv --size-by total --text-tokens 200 --frames 7 --grid 24 40"])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--per-eval", action="store_true", help="one row per evaluation point")
    p.add_argument("--loss", choices=("final", "smoothed"), default="final",
                   help="which validation loss goes into the loss column (default: the last evaluation)")
    p.add_argument("--smooth-last", type=int, default=3, help="evaluations averaged by loss_smoothed")
    p.add_argument("--size-by", choices=("non-embedding", "total"), default=None,
                   help="parameter count of the params column (default: the ladder's, else total)")
    p.add_argument("--text-tokens", type=int, default=None, help="sample layout of real-data runs")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"))
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); usage errors exit with status 2."""
    return build_parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lumos-collect``; returns the exit status (0 a CSV written, 2 bad options or no usable run)."""
    args = parse_args(argv)
    from lumos_megatron.training.flops import DataLayout
    from lumos_megatron.scaling.ladder.collect import COLUMNS, RunCollectError, collect_run

    if args.smooth_last < 1:
        return fail(PROG, "--smooth-last must be >= 1")
    given = (args.text_tokens, args.frames, args.grid)
    if any(v is not None for v in given) and any(v is None for v in given):
        return fail(PROG, "give all of --text-tokens, --frames and --grid, or none")
    layout = DataLayout(args.text_tokens, args.frames, tuple(args.grid)) if args.grid else None
    rows = []
    for i, run_dir in enumerate(args.runs, 1):
        try:
            got = collect_run(Path(run_dir), args.smooth_last, args.per_eval, args.loss, layout,
                              args.size_by.replace("-", "_") if args.size_by else None)
        except (RunCollectError, ValueError, OSError) as err:
            print(f"{PROG}: skipping {run_dir}: {err}", file=sys.stderr)
            continue
        rows += got
        last = got[-1]
        print(f"[{i}/{len(args.runs)}] {run_dir}: {len(got)} row(s), loss {last['loss']:.4f} "
              f"({last['loss_source']}), N = {last['params']} {last['size_by']}", file=sys.stderr)
        if last["train_iters"] and last["iteration"] < last["train_iters"]:
            print(f"{PROG}: warning: {run_dir} stopped at iteration {last['iteration']} of "
                  f"{last['train_iters']}; its rows carry no budget", file=sys.stderr)
    if not rows:
        return fail(PROG, "no usable run")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} row(s) to {out}")
    return 0


if __name__ == "__main__":
    run(main)
