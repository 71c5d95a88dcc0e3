#!/usr/bin/env python
"""Scaling-law fit benchmark: the published 4,500-start Approach 3 fit and a 1,000-resample
bootstrap on the 240 Chinchilla points, batched (ours) against a per-start scipy loop, in one run.

Usage::

    python tools/bench/scaling_fit.py [--bootstrap 1000] [--baseline-starts 4500]
                                      [--baseline-resamples 30] [--check-replicates 5] [--quick]

Data: ``tests/data/chinchilla_figure4_points.csv`` (245 points of Hoffmann et al. 2022, Figure 4, as
extracted by Besiroglu et al. 2024), tokens ``D = C / (6 N)``, the 5 highest losses left out.
Objective: Huber (delta 1e-3) of the log residuals, analytic gradient, in both methods. Rows:

* ``grid fit, ours``: ``fit_approach3``: every start of the published grid minimised by the batched
  L-BFGS (``scaling.fit.lbfgs``, scale-free stopping), then the 5 best distinct end points refined
  with scipy L-BFGS-B at a tight relative tolerance.
* ``grid fit, baseline``: the published method as written: one ``scipy.optimize.minimize(method=
  "L-BFGS-B", jac=True)`` per start, keep the lowest. ``--baseline-starts`` below 4,500 runs an evenly
  strided subset and extrapolates the time (marked ``extrapolated``).
* ``bootstrap, ours``: ``bootstrap_approach3``: ``--bootstrap`` resamples, each refitted from the
  full-data optimum and the 32 best grid starts, all batched.
* ``bootstrap, baseline``: the same 33 starts per resample with one scipy L-BFGS-B call each, on the
  first ``--baseline-resamples`` resamples, extrapolated to ``--bootstrap``.

Times are wall-clock and process CPU seconds. BLAS is limited to one thread (unless
``OPENBLAS_NUM_THREADS`` is set): both methods then run on one core, and on a shared machine CPU
seconds are the steadier measure; the ratios are baseline / ours. After the table: whether the
two grid fits chose the same optimum (objective and parameters), how many starts reached it, the
objective gap between the batched and the scipy bootstrap refits of the same resamples, and, on
``--check-replicates`` resamples, the gap between the 33-start refit and a refit from all 4,500
grid starts.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

# One BLAS thread for both methods (before numpy loads): the products are tiny, and with OpenBLAS's
# default two threads on this 2-core machine scipy's L-BFGS-B alone ran 10-50x slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lumos_megatron.scaling.fit.objective import Approach3Objective  # noqa: E402
from lumos_megatron.scaling.fit.lbfgs import minimize_batched  # noqa: E402
from lumos_megatron.scaling.fit.bootstrap import (  # noqa: E402
    bootstrap_approach3,
    bootstrap_starts,
    refit_resamples,
    resample_counts,
)
from lumos_megatron.scaling.fit.approach3 import fit_approach3, scipy_lbfgsb, start_grid  # noqa: E402

DATA = REPO / "tests" / "data" / "chinchilla_figure4_points.csv"
NAMES = ("E", "A", "B", "alpha", "beta")


def chinchilla_objective() -> Approach3Objective:
    """The 240 points (5 highest losses left out) as an Approach 3 objective."""
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.argsort(loss, kind="stable")[:-5]
    return Approach3Objective(np.log(n[keep]), np.log(c[keep] / (6 * n[keep])), np.log(loss[keep]))


def natural(theta: np.ndarray) -> np.ndarray:
    """``(E, A, B, alpha, beta)`` of ``(a, b, e, alpha, beta)``."""
    return np.array([np.exp(theta[2]), np.exp(theta[0]), np.exp(theta[1]), theta[3], theta[4]])


class Clock:
    """Wall-clock and process CPU seconds since creation; ``stop()`` returns ``Seconds``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> "Seconds":
        return Seconds(time.perf_counter() - self.wall, time.process_time() - self.cpu)


class Seconds(tuple):
    """``(wall, cpu)`` seconds; multiplying scales both (extrapolation)."""

    def __new__(cls, wall: float, cpu: float):
        return super().__new__(cls, (wall, cpu))

    def __mul__(self, factor: float) -> "Seconds":
        return Seconds(self[0] * factor, self[1] * factor)


def machine_line() -> str:
    """CPU model, cores, RAM, library versions and date, for docs/performance.md."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"# {cpu.group(1) if cpu else platform.machine()}, {os.cpu_count()} cores, {mem_gib:.1f} GiB RAM, "
            f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, {datetime.date.today()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--baseline-starts", type=int, default=4500,
                        help="grid starts the scipy baseline runs (default all 4,500)")
    parser.add_argument("--baseline-resamples", type=int, default=30,
                        help="resamples the scipy bootstrap baseline runs (default 30)")
    parser.add_argument("--check-replicates", type=int, default=5,
                        help="resamples also refitted from all 4,500 starts (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="--bootstrap 100 --baseline-starts 450 --baseline-resamples 3 --check-replicates 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.bootstrap, args.baseline_starts, args.baseline_resamples, args.check_replicates = 100, 450, 3, 1
    whole = time.perf_counter()
    objective = chinchilla_objective()
    grid = start_grid()
    print(machine_line())
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f}")

    clock = Clock()
    fit = fit_approach3(objective)
    t_fit = clock.stop()

    subset = np.unique(np.linspace(0, len(grid) - 1, min(args.baseline_starts, len(grid))).round().astype(int))
    clock = Clock()
    base_runs = [scipy_lbfgsb(objective, grid[i]) for i in subset]
    t_base_measured = clock.stop()
    t_base = t_base_measured * (len(grid) / len(subset))
    base_fun = np.array([r.fun for r in base_runs])
    base_best = base_runs[int(np.argmin(base_fun))]

    clock = Clock()
    boot = bootstrap_approach3(objective, fit, args.bootstrap, args.seed)
    t_boot = clock.stop()

    starts = bootstrap_starts(fit)
    counts = resample_counts(objective.num_points, args.bootstrap, args.seed)
    weighted = Approach3Objective(objective.log_n, objective.log_d, objective.log_loss, row_weights=counts)
    n_base_boot = min(args.baseline_resamples, args.bootstrap)
    clock = Clock()
    base_boot = [min((scipy_lbfgsb(weighted, s, row) for s in starts), key=lambda r: r.fun).fun
                 for row in range(n_base_boot)]
    t_base_boot = clock.stop() * (args.bootstrap / max(n_base_boot, 1))

    def row(step, method, work, seconds, base_seconds, note=""):
        print(f"| {step:9s} | {method:39s} | {work:26s} | {seconds[0]:8.2f} | {seconds[1]:8.2f} | "
              f"{base_seconds[0] / seconds[0]:8.1f}x | {base_seconds[1] / seconds[1]:8.1f}x | {note}")

    print("\n| step      | method                                  | work                       |   wall s |    CPU s | "
          "wall ratio | CPU ratio | note")
    print("|-----------|-----------------------------------------|----------------------------|----------|----------|"
          "-----------|-----------|-----")
    extrapolated = len(subset) < len(grid)
    row("grid fit", "batched L-BFGS + scipy refinement (ours)", f"{len(grid)} starts", t_fit, t_base)
    row("grid fit", "scipy L-BFGS-B per start (baseline)", f"{len(grid)} starts", t_base, t_base,
        f"extrapolated from {len(subset)} starts" if extrapolated else "")
    work = f"{args.bootstrap} resamples x {len(starts)} starts"
    row("bootstrap", "batched L-BFGS (ours)", work, t_boot, t_base_boot)
    row("bootstrap", "scipy L-BFGS-B per start (baseline)", work, t_base_boot, t_base_boot,
        f"extrapolated from {n_base_boot} resamples")

    ours, theirs = natural(fit.theta), natural(base_best.x)
    print(f"\ngrid fit, ours:     objective {fit.objective:.12g}, " + ", ".join(
        f"{k} {v:.6g}" for k, v in zip(NAMES, ours)) + f"; {fit.starts_at_optimum} starts within 1e-6 of it")
    near = int((base_fun <= base_best.fun * (1 + 1e-6)).sum())
    print(f"grid fit, baseline: objective {base_best.fun:.12g}, " + ", ".join(
        f"{k} {v:.6g}" for k, v in zip(NAMES, theirs)) + f"; {near} of {len(subset)} starts within 1e-6 of it")
    print(f"relative difference: objective {(fit.objective - base_best.fun) / base_best.fun:+.2e}, "
          f"parameters max {np.max(np.abs(ours / theirs - 1)):.2e}")
    gap = (boot.objective[:n_base_boot] - np.array(base_boot)) / np.array(base_boot)
    print(f"bootstrap: batched vs scipy refits of the same {n_base_boot} resamples from the same starts: "
          f"relative objective difference min {gap.min():+.2e}, max {gap.max():+.2e} (negative: batched lower)")
    if args.check_replicates:
        k = min(args.check_replicates, args.bootstrap)
        t0 = time.perf_counter()
        full_obj = Approach3Objective(objective.log_n, objective.log_d, objective.log_loss,
                                      row_weights=counts[:k])
        full = minimize_batched(full_obj, np.tile(grid, (k, 1)), rows=np.repeat(np.arange(k), len(grid)))
        full_best = full.fun.reshape(k, len(grid)).min(axis=1)
        full_theta = full.x.reshape(k, len(grid), 5)[np.arange(k), full.fun.reshape(k, len(grid)).argmin(axis=1)]
        small_theta, small_fun, _ = refit_resamples(objective, counts[:k], starts)
        gap = (small_fun - full_best) / full_best
        dparam = max(np.max(np.abs(natural(a) / natural(b) - 1)) for a, b in zip(small_theta, full_theta))
        print(f"bootstrap starts: {len(starts)}-start vs {len(grid)}-start refits of {k} resamples "
              f"({time.perf_counter() - t0:.1f} s): relative objective gap max {gap.max():+.2e}, "
              f"parameters max relative difference {dparam:.2e}")
    print("bootstrap std: " + ", ".join(f"{n} {s:.4g}" for n, s in zip(NAMES, boot.samples.std(axis=0, ddof=1))))
    print("bootstrap 95 % intervals: " + ", ".join(f"{n} [{lo:.4g}, {hi:.4g}]"
                                                  for n, (lo, hi) in boot.intervals(0.95).items()))
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    print(f"whole run: {time.perf_counter() - whole:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
