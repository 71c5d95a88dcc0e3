"""PNG figures of a scaling-law fit (matplotlib, Agg; no global pyplot state).

Each function draws one figure into ``path`` and returns it:

* ``plot_loss_vs_params``: runs' loss against N, coloured by compute, with the fitted law along
  ``D = C / M(N)`` (FLOPs per token ``M``) for representative budgets;
* ``plot_isoflop``: Approach 2 profiles (parabolas and their minima) and ``N*(C)`` from Approach 2
  next to Approach 3's;
* ``plot_observed_vs_fitted`` and ``plot_residuals``: goodness of fit, left-out runs marked;
* ``plot_bootstrap``: the bootstrap distribution of each parameter with the fit and its interval.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from lumos_megatron.scaling.fit.allocation import (
    FlopsModel,
    has_optimal_allocation,
    optimal_allocation_for,
    predicted_loss,
)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _budget_norm(compute: np.ndarray) -> colors.Normalize:
    return colors.Normalize(np.log10(compute.min()), np.log10(compute.max()) + 1e-9)


def representative_budgets(compute: np.ndarray, approach2: Optional[Dict], count: int = 6) -> List[float]:
    """Up to ``count`` budgets to draw curves for, spread from the smallest to the largest: Approach 2's
    budgets with >= 3 runs, else quantiles of log C."""
    if approach2 is not None:
        found = [b["flops"] for b in approach2.get("budgets", []) if b["num_points"] >= 3]
        if len(found) >= 2:
            picks = np.unique(np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int))
            return [found[i] for i in picks]
    qs = np.quantile(np.log(compute), np.linspace(0.05, 0.95, count))
    return list(np.exp(qs))


def plot_loss_vs_params(path: Path, params: np.ndarray, loss: np.ndarray, compute: np.ndarray,
                        fit: Dict[str, float], flops: FlopsModel, budgets: Sequence[float]) -> Path:
    """Loss against model size, points coloured by log10 compute, fitted curves per budget."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    norm, cmap = _budget_norm(compute), cm.viridis
    ax.scatter(params, loss, c=cmap(norm(np.log10(compute))), s=14, alpha=0.8, edgecolors="none")
    n_grid = np.geomspace(params.min() / 1.5, params.max() * 1.5, 200)
    for c in budgets:
        ax.plot(n_grid, predicted_loss(fit, n_grid, c / flops.per_token(n_grid)), color=cmap(norm(np.log10(c))),
                lw=1.3)
        if has_optimal_allocation(fit):
            (n_opt,), (d_opt,) = optimal_allocation_for(fit, c, flops)
            if n_grid[0] <= n_opt <= n_grid[-1]:  # one far-off optimum would squash the runs' range
                ax.plot([n_opt], [predicted_loss(fit, n_opt, d_opt)], marker="*", color="black", ms=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("Loss vs model size; lines: fitted L(N, C/M(N)) per budget, *: optimum in range")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="log10 training FLOPs")
    ax.set_ylim(loss.min() * 0.97, np.percentile(loss, 99) * 1.05)
    return _save(fig, path)


def plot_isoflop(path: Path, params: np.ndarray, loss: np.ndarray, compute: np.ndarray,
                 approach2: Dict, fit: Dict[str, float], flops: FlopsModel) -> Path:
    """Approach 2: IsoFLOP parabolas with their minima, and N*(C) against Approach 3's."""
    fig = Figure(figsize=(12, 4.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    norm, cmap = _budget_norm(compute), cm.viridis
    for budget in approach2["budgets"]:
        if "c2" not in budget:
            continue
        idx = np.array(budget["indices"])
        color = cmap(norm(np.log10(budget["flops"])))
        left.scatter(params[idx], loss[idx], color=color, s=14)
        x = np.linspace(np.log(params[idx]).min(), np.log(params[idx]).max(), 100)
        left.plot(np.exp(x), budget["c2"] * x ** 2 + budget["c1"] * x + budget["c0"], color=color,
                  lw=1.2, ls="-" if budget["used"] else ":")
        if budget["used"]:
            left.plot([budget["params_opt"]], [budget["loss_opt"]], marker="o", mfc="none", color="black")
    left.set_xscale("log")
    left.set_xlabel("parameters N")
    left.set_ylabel("loss")
    left.set_title("IsoFLOP profiles (dotted: not used)")
    c_all = np.geomspace(compute.min(), compute.max() * 10, 50)
    if has_optimal_allocation(fit):
        right.plot(c_all, optimal_allocation_for(fit, c_all, flops)[0], color="tab:red", label="Approach 3 N*(C)")
    if not approach2.get("skipped", True):
        used = [b for b in approach2["budgets"] if b["used"]]
        law = approach2["params_opt"]
        right.scatter([b["flops"] for b in used], [b["params_opt"] for b in used], color="black",
                      label="profile minima")
        right.plot(c_all, law["coefficient"] * c_all ** law["exponent"], color="black", ls="--",
                   label=f"Approach 2 fit, exponent {law['exponent']:.3f}")
    else:
        left.text(0.5, 0.5, "Approach 2 skipped:\n" + textwrap.fill(approach2.get("note", ""), 60),
                  transform=left.transAxes, ha="center", va="center", fontsize=8)
        left.set_xlim(params.min() / 1.5, params.max() * 1.5)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("training FLOPs C")
    right.set_ylabel("optimal parameters N*")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    else:  # neither a positive-exponent fit nor usable IsoFLOP profiles: say so instead of a blank
        right.text(0.5, 0.5, "no compute-optimal curve:\nno positive fitted exponents\nand no usable profiles",
                   transform=right.transAxes, ha="center", va="center", fontsize=8)
    right.set_title("Compute-optimal model size")
    return _save(fig, path)


def plot_observed_vs_fitted(path: Path, observed: np.ndarray, fitted: np.ndarray,
                            excluded_observed: np.ndarray, excluded_fitted: np.ndarray) -> Path:
    """Fitted against observed loss, with the identity line; left-out runs as crosses."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    ax.scatter(observed, fitted, s=12, alpha=0.8, label="fitted runs")
    if excluded_observed.size:
        ax.scatter(excluded_observed, excluded_fitted, marker="x", color="tab:red", label="left out")
    every = np.concatenate([observed, fitted, excluded_observed, excluded_fitted])
    lo, hi = every.min(), every.max()
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    ax.set_xlim(lo * 0.98, hi * 1.02)
    ax.set_ylim(lo * 0.98, hi * 1.02)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("fitted loss")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_residuals(path: Path, params: np.ndarray, tokens: np.ndarray, log_residual: np.ndarray,
                   delta: float) -> Path:
    """Log residuals (observed minus fitted) against N and D, and their histogram."""
    fig = Figure(figsize=(13, 4))
    for i, (x, name) in enumerate(((params, "parameters N"), (tokens, "tokens D"))):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.scatter(x, log_residual, s=10, alpha=0.8)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("log L_obs - log L_fit")
    ax = fig.add_subplot(1, 3, 3)
    ax.hist(log_residual, bins=40)
    for sign in (-1, 1):
        ax.axvline(sign * delta, color="tab:red", lw=0.8)
    ax.set_xlabel("log residual (red: Huber delta)")
    return _save(fig, path)


def plot_bootstrap(path: Path, samples: Optional[np.ndarray], names: Sequence[str],
                   fit: Dict[str, float], ci: Dict[str, list], level: float) -> Path:
    """Histogram of each parameter's bootstrap samples, with the fit and the percentile interval."""
    fig = Figure(figsize=(15, 3.4))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        if samples is not None and len(samples):
            column = samples[:, i][np.isfinite(samples[:, i])]  # a degenerate refit can overflow exp
            spread = np.ptp(column) if column.size else 0.0
            # Identical replicates (noise-free runs) have no range to cut into 30 bins.
            ax.hist(column, bins=30 if spread > 1e-12 * max(abs(fit[name]), 1e-300) else 1,
                    color="tab:blue", alpha=0.75)
            if column.size < samples.shape[0]:
                ax.set_xlabel(f"{samples.shape[0] - column.size} non-finite replicates left out", fontsize=7)
            for edge in ci[name]:
                ax.axvline(edge, color="tab:orange", ls="--", lw=1)
        else:
            ax.text(0.5, 0.5, "no bootstrap", transform=ax.transAxes, ha="center")
        ax.axvline(fit[name], color="black", lw=1.2)
        ax.set_title(f"{name}: {fit[name]:.4g}")
    fig.suptitle(f"Bootstrap distributions (black: fit, orange: {level:.0%} percentile interval)", fontsize=9)
    return _save(fig, path)
