"""Fit scaling laws to a table of training runs (Hoffmann et al. 2022, Approaches 3 and 2).

    lumos-fit --runs RUNS.csv --out DIR [--exclude-top-loss K] [--bootstrap B]
        [--seed S] [--ci 0.95] [--params-column params] [--allow-mixed-loss] [--huber-delta 1e-3]
        [--budget-rtol 0.05]

(also ``python tools/scaling/fit.py``.) RUNS.csv needs the columns ``params`` (or the one named by
--params-column), ``tokens`` and ``loss``; ``size_by``, ``flops``, ``budget``, ``loss_source`` and
``run`` are used when present (what lumos-collect writes: ``params`` is then the ladder's own size
measure), other columns are ignored. Writes ``DIR/fit.json`` (E, A, B, alpha, beta, their bootstrap
intervals ``ci``, Approach 2, the compute-optimal allocation and every setting),
``DIR/bootstrap_samples.csv``, PNG plots and ``DIR/report.md``. The method is described in
docs/scaling.md.

Exit status: 0 done; 2 bad input (one line on stderr: missing file or column, a value that is not
a finite positive number, rows of two size measures or of two loss sources, too few runs, an
invalid option).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

# One BLAS thread unless the caller chose otherwise: the fit's matrix products are tiny, and on a
# small shared machine BLAS worker threads make scipy's L-BFGS-B many times slower. Set before
# numpy loads (this module itself imports neither numpy nor scipy at import time).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from lumos_megatron.cli.base import CommandParser, fail, run  # noqa: E402

PROG = "lumos-fit"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``lumos-fit``."""
    p = CommandParser(PROG, __doc__.split("\n\n")[0], examples=[
        "lumos-fit --runs runs.csv --out fits/ladder",
        "lumos-fit --runs runs.csv --out fits/ladder_b1000 --exclude-top-loss 5 --bootstrap 1000 --seed 1",
        "lumos-fit --runs runs.csv --out fits/total --params-column total_params"])
    p.add_argument("--runs", required=True, help="CSV of runs: params, tokens, loss[, flops, budget]")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--exclude-top-loss", type=int, default=0, metavar="K",
                   help="leave out the K runs with the highest loss (default 0)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B",
                   help="bootstrap resamples for the intervals (default 200, at least 2)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--ci", type=float, default=0.95,
                   help="central coverage of the percentile intervals (default 0.95)")
    p.add_argument("--params-column", default="params",
                   help="column with the parameter count N (default params: the ladder's measure, "
                        "size_by; or non_embedding_params, total_params)")
    p.add_argument("--allow-mixed-loss", action="store_true",
                   help="fit validation and training losses together (refused by default)")
    p.add_argument("--huber-delta", type=float, default=1e-3, help="Huber threshold (default 1e-3)")
    p.add_argument("--budget-rtol", type=float, default=0.05,
                   help="relative compute tolerance of one IsoFLOP budget (default 0.05)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); usage errors exit with status 2."""
    return build_parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lumos-fit``; returns the exit status (0 done, 2 bad input)."""
    args = parse_args(argv)
    from lumos_megatron.scaling.fit.pipeline import FitOptions, run_scaling_fit
    from lumos_megatron.scaling.fit.table import RunsInputError

    options = FitOptions(exclude_top_loss=args.exclude_top_loss, bootstrap=args.bootstrap,
                         seed=args.seed, ci=args.ci, params_column=args.params_column,
                         allow_mixed_loss=args.allow_mixed_loss,
                         huber_delta=args.huber_delta, budget_rtol=args.budget_rtol)
    try:
        result = run_scaling_fit(args.runs, args.out, options)
    except RunsInputError as err:
        return fail(PROG, str(err).replace("\n", " "))
    ci = result["ci"]
    print(f"{result['settings']['num_points']} runs; "
          + ", ".join(f"{k} = {result[k]:.4g} [{ci[k][0]:.4g}, {ci[k][1]:.4g}]"
                      for k in ("E", "A", "B", "alpha", "beta")))
    print(f"wrote {os.path.join(args.out, 'fit.json')} and {os.path.join(args.out, 'report.md')}")
    return 0


if __name__ == "__main__":
    run(main)
