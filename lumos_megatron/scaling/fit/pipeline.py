"""The whole scaling-law fit of a runs table: Approach 3 with bootstrap, Approach 2, allocation,
plots and report, written to an output directory (what ``tools/scaling/fit.py`` runs).

Outputs in ``out_dir``: ``fit.json`` (fitted values, intervals, settings, Approach 2, allocation),
``bootstrap_samples.csv`` (one row per bootstrap replicate), the PNG plots and ``report.md``.
All fits use the same runs: the table minus the ``exclude_top_loss`` highest-loss runs.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from lumos_megatron.scaling.fit import plots
from lumos_megatron.scaling.fit.objective import HUBER_DELTA, Approach3Objective, predict_loss
from lumos_megatron.scaling.fit.allocation import FlopsModel, allocation_summary, example_budgets
from lumos_megatron.scaling.fit.approach3 import POLISH_TOP, REFINE_FTOL, REFINE_GTOL, START_GRID, fit_approach3
from lumos_megatron.scaling.fit.bootstrap import BOOTSTRAP_GRID_STARTS, SAMPLE_NAMES, bootstrap_approach3
from lumos_megatron.scaling.fit.lbfgs import FTOL, GTOL
from lumos_megatron.scaling.fit.approach2 import BUDGET_RTOL, fit_approach2
from lumos_megatron.scaling.fit.table import RunsInputError, exclude_top_loss, read_runs_csv, require_points
from lumos_megatron.scaling.fit.report import write_report

#: File names of the figures, by role.
PLOT_FILES = {"loss_vs_params": "loss_vs_params.png", "isoflop": "isoflop_profiles.png",
              "observed_vs_fitted": "observed_vs_fitted.png", "residuals": "residuals.png",
              "bootstrap": "bootstrap_distributions.png"}


@dataclass
class FitOptions:
    """Settings of one fit (the CLI flags)."""

    exclude_top_loss: int = 0
    bootstrap: int = 200
    seed: int = 0
    ci: float = 0.95
    params_column: str = "params"
    allow_mixed_loss: bool = False
    huber_delta: float = HUBER_DELTA
    budget_rtol: float = BUDGET_RTOL
    bootstrap_grid_starts: int = BOOTSTRAP_GRID_STARTS

    def validate(self) -> None:
        """Raise ``RunsInputError`` for settings outside their domain."""
        if self.bootstrap < 2:
            raise RunsInputError(f"--bootstrap must be at least 2 (percentile intervals), got {self.bootstrap}")
        if not 0.0 < self.ci < 1.0:
            raise RunsInputError(f"--ci must be in (0, 1), got {self.ci}")
        if not self.huber_delta > 0:
            raise RunsInputError(f"--huber-delta must be positive, got {self.huber_delta}")
        if not self.budget_rtol >= 0:
            raise RunsInputError(f"--budget-rtol must be >= 0, got {self.budget_rtol}")


def _finite(value):
    """JSON-safe copy: non-finite floats become ``None``, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def run_scaling_fit(runs_csv: str | Path, out_dir: str | Path, options: Optional[FitOptions] = None) -> Dict:
    """Fit the runs in ``runs_csv`` and write every output to ``out_dir``; returns ``fit.json``'s content.

    Raises ``RunsInputError`` for unusable input (before anything is written)."""
    options = options or FitOptions()
    options.validate()
    started = time.perf_counter()
    all_runs = read_runs_csv(runs_csv, options.params_column, options.allow_mixed_loss)
    runs, excluded = exclude_top_loss(all_runs, options.exclude_top_loss)
    require_points(runs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunsInputError(f"--out exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)

    objective = Approach3Objective(np.log(runs.params), np.log(runs.tokens), np.log(runs.loss),
                                   delta=options.huber_delta)
    t0 = time.perf_counter()
    fit = fit_approach3(objective)
    t_fit = time.perf_counter() - t0
    params = fit.params()
    t0 = time.perf_counter()
    boot = bootstrap_approach3(objective, fit, options.bootstrap, options.seed, options.bootstrap_grid_starts,
                               groups=runs.groups)
    t_boot = time.perf_counter() - t0
    ci = boot.intervals(options.ci)
    samples = boot.samples

    # Compute per row: the flops column where given, else the FLOPs-per-token model of the others.
    flops_model = FlopsModel.measure(runs.params, runs.tokens, runs.flops) or FlopsModel.constant()
    compute = flops_model.compute(runs.params, runs.tokens)
    if runs.flops is not None:
        compute = np.where(np.isfinite(runs.flops), runs.flops, compute)
    approach2 = fit_approach2(runs.params, runs.loss, compute, flops_model, runs.budget, options.budget_rtol,
                              resample_weights=boot.weights, ci=options.ci)
    allocation = allocation_summary(params, example_budgets(compute), flops_model)

    with (out / "bootstrap_samples.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["replicate", *SAMPLE_NAMES, "objective"])
        for i, row in enumerate(samples):
            writer.writerow([i, *(f"{v:.10g}" for v in row), f"{boot.objective[i]:.10g}"])

    fitted = predict_loss(fit.theta, runs.params, runs.tokens)
    log_residual = np.log(runs.loss) - np.log(fitted)
    ex = np.array([[e["params"], e["tokens"], e["loss"]] for e in excluded]).reshape(-1, 3)
    ex_fitted = predict_loss(fit.theta, ex[:, 0], ex[:, 1]) if len(ex) else np.zeros(0)
    budgets = plots.representative_budgets(compute, approach2)
    plots.plot_loss_vs_params(out / PLOT_FILES["loss_vs_params"], runs.params, runs.loss, compute,
                              params, flops_model, budgets)
    plots.plot_isoflop(out / PLOT_FILES["isoflop"], runs.params, runs.loss, compute, approach2, params,
                       flops_model)
    plots.plot_observed_vs_fitted(out / PLOT_FILES["observed_vs_fitted"], runs.loss, fitted, ex[:, 2], ex_fitted)
    plots.plot_residuals(out / PLOT_FILES["residuals"], runs.params, runs.tokens, log_residual,
                         options.huber_delta)
    plots.plot_bootstrap(out / PLOT_FILES["bootstrap"], samples, SAMPLE_NAMES, params, ci, options.ci)

    for budget in approach2["budgets"]:  # indices into the fitted runs -> CSV line numbers
        budget["lines"] = runs.line[np.array(budget.pop("indices"), dtype=int)].tolist()
    result = {
        **params,
        "ci": ci,
        "ci_level": options.ci,
        "ci_method": (f"bootstrap percentile interval, {options.bootstrap} resamples of the runs with "
                      f"replacement ({int(np.unique(runs.groups).size)} runs"
                      + (f" of {len(runs)} rows; a run's rows are drawn together)" if runs.run is not None else ")")),
        "log_params": {"a": float(fit.theta[0]), "b": float(fit.theta[1]), "e": float(fit.theta[2])},
        "objective": fit.objective,
        "model": "L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, Approach 3)",
        "settings": {
            "runs_csv": str(runs_csv),
            "params_column": options.params_column,
            "size_by": runs.measure,
            "loss_source": list(runs.loss_sources),
            "num_runs": int(np.unique(runs.groups).size),
            "num_points": len(runs),
            "num_points_total": len(all_runs),
            "exclude_top_loss": options.exclude_top_loss,
            "excluded": excluded,
            "huber_delta": options.huber_delta,
            "objective": "sum of Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L)",
            "grid": {name: list(values) for name, values in START_GRID.items()},
            "num_starts": fit.num_starts,
            "optimizer": {"name": "L-BFGS, all starts batched (numpy), best end points refined with "
                                  "scipy L-BFGS-B, analytic gradients",
                          "stopping": "relative to the objective's value (scale-free)",
                          "ftol_relative": FTOL, "gtol_relative": GTOL, "memory": 10,
                          "refine": {"top": POLISH_TOP, "ftol_relative": REFINE_FTOL,
                                     "gtol_relative": REFINE_GTOL}},
            "bootstrap": options.bootstrap,
            "bootstrap_starts": f"full-data optimum + the {options.bootstrap_grid_starts} grid starts "
                                "whose full-data runs ended lowest",
            "seed": options.seed,
            "ci": options.ci,
            "budget_rtol": options.budget_rtol,
        },
        "diagnostics": {"starts_at_optimum": fit.starts_at_optimum, "polish_improved": fit.polished,
                        "objective_batched": fit.batched_objective, "objective_refined": fit.objective,
                        "max_iterations": fit.batched_iterations,
                        "bootstrap_optimum_start_wins": boot.optimum_start_wins},
        "bootstrap": {"num_resamples": options.bootstrap, "samples_file": "bootstrap_samples.csv",
                      "std": {name: float(samples[:, i].std(ddof=1)) for i, name in enumerate(SAMPLE_NAMES)}},
        "approach2": approach2,
        "allocation": allocation,
        "plots": dict(PLOT_FILES),
        "timing_s": {"grid_fit": t_fit, "bootstrap": t_boot},
    }
    result["timing_s"]["total"] = time.perf_counter() - started
    result = _finite(result)
    (out / "fit.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(out / "report.md", result, asdict(options))
    return result
