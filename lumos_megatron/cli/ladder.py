"""Lay out a scaling ladder: model sizes x token budgets, one derived recipe and sbatch command per run.

    lumos-ladder --base RECIPE --out DIR --n-min N --n-max N
        (--tokens-per-param K ... | --isoflop C ...) [--num-sizes S] [--size-by non-embedding|total]
        [--head-dim 64 --aspect 128 --gqa-ratio 4 --ffn-ratio 4 --ffn-multiple 64]
        [--nodes 1 --gpus-per-node 8 --launcher torchrun|srun] [--gpu h100|h200|a100 --mfu 0.35]
        [--set section.field=value ...] [--dry-run]

(also ``python tools/scaling/make_ladder.py``.) Sizes are non-embedding parameters unless
--size-by total. Batch size and learning rate follow the DeepSeek LLM (2024) compute power laws,
warmup and a cosine decay to 10% over each run (docs/scaling_ladders.md). Writes DIR/ladder.json,
DIR/submit.sh and DIR/<run>/recipe.yaml (+ ladder_run.json); the runs' outputs go to DIR/<run>/
(the launcher's OUT). submit.sh uses the SLURM launchers of a checkout: --repo-dir, default the
checkout holding the current directory or this package (else it asks for REPO_DIR). --dry-run
prints the table (N, D, C, estimated GPU-hours) and writes nothing.
Exit status 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from lumos_megatron.cli.base import CommandParser, fail, run

PROG = "lumos-ladder"
EXAMPLES = [
    "lumos-ladder --base examples/recipes/tiny_cpu.yaml --out runs/ladder --n-min 2e7 --n-max 1e9 "
    "--num-sizes 5 --tokens-per-param 10 20 40 --dry-run",
    "lumos-ladder --base examples/recipes/tiny_cpu.yaml --out runs/isoflop --n-min 2e7 --n-max 1e9 "
    "--isoflop 1e19 1e20 1e21 --nodes 2 --launcher srun",
    "lumos-ladder --base recipe.yaml --out runs/webvid --n-min 2e7 --n-max 1.2e9 --tokens-per-param 20 "
    "--text-tokens 200 --frames 1 --grid 44 44 --gpu h200",
]


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``lumos-ladder``."""
    p = CommandParser(PROG, __doc__.split("\n\n")[0], examples=EXAMPLES)
    p.add_argument("--base", required=True, help="base recipe (data, vocabulary, objective, optimizer)")
    p.add_argument("--out", required=True, help="ladder directory")
    p.add_argument("--n-min", type=float, required=True, help="smallest model size (parameters)")
    p.add_argument("--n-max", type=float, required=True, help="largest model size (parameters)")
    p.add_argument("--num-sizes", type=int, default=0, help="sizes, log-spaced (default: every member)")
    p.add_argument("--size-by", choices=("non-embedding", "total"), default="non-embedding",
                   help="parameter count of N, --n-min/--n-max and the tokens-per-param multiples")
    budgets = p.add_mutually_exclusive_group(required=True)
    budgets.add_argument("--tokens-per-param", type=float, nargs="+", metavar="K", help="D = K x N")
    budgets.add_argument("--isoflop", type=float, nargs="+", metavar="C",
                         help="compute budgets (model FLOPs): D = C / FLOPs per token, every size")
    p.add_argument("--tpp-range", type=float, nargs=2, default=(1.0, 1000.0), metavar=("LO", "HI"),
                   help="--isoflop: keep runs whose D/N lies in [LO, HI] (default 1 1000)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--aspect", type=float, default=128.0, help="width / depth (Kaplan et al. 2020)")
    p.add_argument("--gqa-ratio", type=int, default=4, help="query heads per KV group")
    p.add_argument("--ffn-ratio", type=float, default=4.0, help="SwiGLU width / width")
    p.add_argument("--ffn-multiple", type=int, default=64, help="round the SwiGLU width up to this")
    p.add_argument("--lr-multiplier", type=float, default=1.0, help="scales the rule's LR")
    p.add_argument("--batch-multiplier", type=float, default=1.0, help="scales the rule's batch")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final / peak LR (cosine)")
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="cap on warmup / run length")
    p.add_argument("--evals-per-run", type=int, default=5, help="validation points per run")
    evals = p.add_mutually_exclusive_group()
    evals.add_argument("--eval-iters", type=int, default=None, help="batches per evaluation (default: base's)")
    evals.add_argument("--eval-samples", type=int, default=None,
                       help="validation samples per evaluation, the same for every run (sets eval_iters)")
    p.add_argument("--text-tokens", type=int, default=None, help="sample layout: caption tokens")
    p.add_argument("--frames", type=int, default=None, help="sample layout: latent frames")
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="sample layout: latent grid")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override of the base recipe (repeatable)")
    p.add_argument("--keep-parallel", action="store_true", help="keep the base's TP/PP/CP (default: DP only)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--launcher", choices=("torchrun", "srun"), default="torchrun")
    p.add_argument("--gpu", default="h100", help="GPU of the estimate (h100, h200, a100, ...)")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed MFU of the estimate")
    p.add_argument("--repo-dir", type=Path, default=None,
                   help="lumos_megatron checkout whose examples/slurm launchers submit.sh uses "
                        "(default: found from the current directory or the installed package)")
    p.add_argument("--prefix", default="", help="prefix of run and job names")
    p.add_argument("--dry-run", action="store_true", help="print the table; write nothing")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); usage errors exit with status 2."""
    return build_parser().parse_args(argv)


def _layout(args, base):
    """The sample layout the options give (missing parts from the base's mock data), or None."""
    from lumos_megatron.training.flops import DataLayout

    given = [args.text_tokens, args.frames, args.grid]
    if all(v is None for v in given):
        return None
    mock = DataLayout.from_mock(base)
    return DataLayout(mock.text_tokens if args.text_tokens is None else args.text_tokens,
                      mock.frames if args.frames is None else args.frames,
                      mock.grid if args.grid is None else tuple(args.grid))


def _checkout(args) -> Optional[Path]:
    """The checkout submit.sh changes to (see --repo-dir); ValueError for a wrong --repo-dir."""
    import lumos_megatron
    from lumos_megatron.scaling.ladder.launch import find_checkout

    if args.repo_dir is not None:
        if find_checkout(args.repo_dir) != args.repo_dir.resolve():
            raise ValueError(f"--repo-dir {args.repo_dir} is not a lumos_megatron checkout "
                             "(no examples/slurm/_lib.sh)")
        return args.repo_dir.resolve()
    return find_checkout(Path.cwd()) or find_checkout(Path(lumos_megatron.__file__).parent)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lumos-ladder``; returns the exit status (0 done or dry run, 2 unusable arguments)."""
    args = parse_args(argv)
    from lumos_megatron.config import ConfigError
    from lumos_megatron.scaling.ladder.hparam_rule import HParamRule
    from lumos_megatron.scaling.ladder.plan import LadderSpec, load_base, plan_ladder
    from lumos_megatron.scaling.ladder.launch import LaunchSpec, markdown_table, write_ladder
    from lumos_megatron.scaling.ladder.shapes import ShapeRule
    from lumos_megatron.training.flops import DataLayout

    try:
        overrides = []
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: expected section.field=value")
            overrides.append((key.strip(), value))
        if not Path(args.base).is_file():
            raise ValueError(f"base recipe {args.base} not found")
        spec = LadderSpec(
            base=Path(args.base), n_min=args.n_min, n_max=args.n_max,
            size_by=args.size_by.replace("-", "_"), num_sizes=args.num_sizes,
            tokens_per_param=tuple(args.tokens_per_param or ()), isoflop=tuple(args.isoflop or ()),
            tpp_range=tuple(args.tpp_range),
            shape_rule=ShapeRule(args.head_dim, args.aspect, args.gqa_ratio, args.ffn_ratio, args.ffn_multiple),
            hparam_rule=HParamRule(args.lr_multiplier, args.batch_multiplier, args.min_lr_ratio,
                                   warmup_fraction=args.warmup_fraction),
            overrides=tuple(overrides), nodes=args.nodes, gpus_per_node=args.gpus_per_node,
            keep_parallel=args.keep_parallel, evals_per_run=args.evals_per_run,
            eval_iters=args.eval_iters, eval_samples=args.eval_samples, prefix=args.prefix)
        base = load_base(spec)
        layout = _layout(args, base)
        spec = dataclasses.replace(spec, layout=layout)
        launch = LaunchSpec(Path(args.out), args.launcher, args.gpu, args.mfu, repo_dir=_checkout(args))
        launch.peak_tflops(base.train.precision)  # unknown GPU / bad MFU: before any work
        runs = plan_ladder(spec)
    except (ValueError, ConfigError) as err:
        return fail(PROG, err)
    print(markdown_table(runs, spec, launch))
    if args.dry_run:
        return 0
    path = write_ladder(runs, spec, launch, layout or DataLayout.from_mock(base))
    print(f"wrote {len(runs)} recipes and {path}; submit with: bash {launch.out / 'submit.sh'}")
    return 0


if __name__ == "__main__":
    run(main)
