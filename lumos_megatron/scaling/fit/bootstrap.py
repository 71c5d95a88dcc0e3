"""Bootstrap uncertainty of the Approach 3 parameters (percentile intervals).

Each bootstrap replicate resamples the G runs with replacement (G draws) and refits the model. A
*run* is the unit: when the table has several rows per run (one per evaluation, ``collect.py
--per-eval``), a drawn run brings all its rows, since the evaluations of one run share its seed,
data order and schedule and are not independent observations; resampling rows would make the
intervals too narrow. A resample is represented by integer weights on the rows (how many times
their run was drawn), so all replicates share one objective and run together in
``lbfgs.minimize_batched``. With one row per run this is the classic row bootstrap, draw for draw.

Starting points of each refit (a deliberate saving over re-running the 4,500-point grid per replicate):
the full-data optimum, plus the ``grid_starts`` (default 32) points *of the published grid* whose
full-data runs ended lowest. Starting a replicate only at full-data optima does not work: the Huber
objective with a small delta is rugged near its minimum, L-BFGS stays in the nearest local optimum,
and the intervals come out too narrow (about 15-25 % too narrow for e and beta on the Chinchilla
points). Re-running the good grid starts lets each replicate's optimisation find its own optimum. On
the Chinchilla points, 30 replicates refitted from all 4,500 starts and from these 33 starts agree
to a relative objective difference below 4e-8 and give the same parameter spread to 4 digits;
``tools/bench/scaling_fit.py`` repeats this check on a few replicates.

The replicate's fit is its lowest end point; ``BootstrapResult.optimum_start_wins`` counts how often
that was the run started at the full-data optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from lumos_megatron.scaling.fit.objective import Approach3Objective
from lumos_megatron.scaling.fit.lbfgs import minimize_batched
from lumos_megatron.scaling.fit.approach3 import Approach3Fit

#: Grid starts (best full-data end points first) re-run in every bootstrap refit.
BOOTSTRAP_GRID_STARTS = 32

#: Parameter names of the natural-scale samples, in column order.
SAMPLE_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass
class BootstrapResult:
    """Per-replicate fits: ``theta`` ``[R, 5]`` in ``(a, b, e, alpha, beta)`` order, their objectives,
    the starting points used for every replicate, and how often the full-data optimum's run won."""

    theta: np.ndarray
    objective: np.ndarray
    starts: np.ndarray
    optimum_start_wins: int
    seed: int
    weights: Optional[np.ndarray] = None
    """``[R, P]`` row weights of the resamples (Approach 2 refits on the same resamples)."""

    @property
    def samples(self) -> np.ndarray:
        """``[R, 5]`` samples of ``(E, A, B, alpha, beta)``."""
        return np.column_stack([np.exp(self.theta[:, 2]), np.exp(self.theta[:, 0]),
                                np.exp(self.theta[:, 1]), self.theta[:, 3], self.theta[:, 4]])

    def intervals(self, level: float) -> Dict[str, list]:
        """Percentile intervals ``{name: [low, high]}`` holding the central ``level`` of the samples."""
        tail = 100.0 * (1.0 - level) / 2.0
        low, high = np.percentile(self.samples, [tail, 100.0 - tail], axis=0)
        return {name: [float(low[i]), float(high[i])] for i, name in enumerate(SAMPLE_NAMES)}


def resample_counts(groups: np.ndarray | int, num_resamples: int, seed: int) -> np.ndarray:
    """``[R, P]`` row weights of ``num_resamples`` resamples with replacement of whole runs.

    ``groups`` gives each row's run id (``[P]``; an int P means P rows, each its own run). Each
    resample draws as many runs as there are, and a row's weight is how often its run was drawn."""
    groups = np.arange(groups) if np.ndim(groups) == 0 else np.asarray(groups)
    _, codes = np.unique(groups, return_inverse=True)
    num_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_groups, size=(num_resamples, num_groups))
    flat = draws + num_groups * np.arange(num_resamples)[:, None]
    per_group = np.bincount(flat.ravel(), minlength=num_resamples * num_groups).reshape(
        num_resamples, num_groups).astype(float)
    return per_group[:, codes]


def bootstrap_starts(fit: Approach3Fit, grid_starts: int = BOOTSTRAP_GRID_STARTS) -> np.ndarray:
    """Starting points of every refit: the full-data optimum, then the ``grid_starts`` grid points
    whose full-data runs ended lowest (``fit.start_points``, ``fit.endpoint_objectives``)."""
    order = np.argsort(np.where(np.isfinite(fit.endpoint_objectives), fit.endpoint_objectives, np.inf))
    return np.vstack([fit.theta[None, :], fit.start_points[order[:grid_starts]]])


def refit_resamples(objective: Approach3Objective, counts: np.ndarray, starts: np.ndarray):
    """Fit every resample (rows of draw ``counts``) from every start; returns ``(theta, objective,
    index of the winning start)`` per resample."""
    num_resamples, k = counts.shape[0], len(starts)
    weighted = Approach3Objective(objective.log_n, objective.log_d, objective.log_loss,
                                  delta=objective.delta, row_weights=counts)
    result = minimize_batched(weighted, np.tile(starts, (num_resamples, 1)),
                              rows=np.repeat(np.arange(num_resamples), k))
    fun = np.where(np.isfinite(result.fun), result.fun, np.inf).reshape(num_resamples, k)
    best = np.argmin(fun, axis=1)
    picked = np.arange(num_resamples)
    return result.x.reshape(num_resamples, k, 5)[picked, best], fun[picked, best], best


def bootstrap_approach3(objective: Approach3Objective, fit: Approach3Fit, num_resamples: int,
                        seed: int = 0, grid_starts: int = BOOTSTRAP_GRID_STARTS,
                        groups: Optional[np.ndarray] = None) -> BootstrapResult:
    """Refit Approach 3 on ``num_resamples`` bootstrap resamples of ``objective``'s runs.

    ``fit`` is the full-data fit; its optimum and best grid starts seed the refits (module doc).
    ``groups`` (``[P]``) names each row's run; default: every row is a run."""
    starts = bootstrap_starts(fit, grid_starts)
    counts = resample_counts(objective.num_points if groups is None else groups, num_resamples, seed)
    theta, value, best = refit_resamples(objective, counts, starts)
    return BootstrapResult(theta=theta, objective=value, starts=starts,
                           optimum_start_wins=int((best == 0).sum()), seed=seed, weights=counts)
