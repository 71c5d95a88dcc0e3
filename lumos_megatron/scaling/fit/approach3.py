"""Approach 3 fit: ``L(N, D) = E + A / N**alpha + B / D**beta`` from a grid of starting points.

The recipe is the one of Hoffmann et al. (2022), Approach 3, as re-run by Besiroglu et al. (2024):
minimise the Huber objective of ``approach3_objective`` (log-space residuals, ``delta = 1e-3``) with
L-BFGS from every point of the grid

    alpha, beta in {0, 0.5, 1, 1.5, 2};  e in {-1, -0.5, 0, 0.5, 1};  a, b in {0, 5, 10, 15, 20, 25}

(4,500 starts) and keep the start whose converged objective is lowest. Every start is run to
convergence; nothing is pruned on its initial value. The starts run together in
``lbfgs.minimize_batched`` (about 8x less CPU time than one scipy run per start), whose stopping
tests are relative to the objective's value (scale-free; see ``lbfgs``).

**Refinement.** The few best distinct end points are then re-run with scipy's L-BFGS-B (analytic
gradients) at a tight tolerance: on the objective divided by its value at the end point, so that
scipy's ``ftol`` test (relative only above 1) is relative here too, with ``REFINE_FTOL`` and
``REFINE_GTOL``. A lower result replaces the batched one; ``fit.json`` reports the objective before
and after. ``tools/bench/scaling_fit.py`` runs the per-start scipy loop of the published method in
the same process and compares the chosen optimum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
from scipy.optimize import minimize

from lumos_megatron.scaling.fit.objective import Approach3Objective
from lumos_megatron.scaling.fit.lbfgs import BatchedResult, minimize_batched

#: The published grid of starting points (Hoffmann et al. 2022; Besiroglu et al. 2024).
START_GRID: Dict[str, Sequence[float]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}

#: How many of the best batched end points are re-run with scipy's L-BFGS-B.
POLISH_TOP = 5
#: Relative-reduction and (relative) gradient tolerances of the refinement.
REFINE_FTOL = 1e-13
REFINE_GTOL = 1e-10
#: A start "reached the optimum" when its end objective is within this relative distance of the best.
OPTIMUM_RTOL = 1e-6


def start_grid(grid: Dict[str, Sequence[float]] = START_GRID) -> np.ndarray:
    """All combinations of ``grid`` as ``[S, 5]`` rows in ``(a, b, e, alpha, beta)`` order."""
    axes = [grid[name] for name in ("a", "b", "e", "alpha", "beta")]
    return np.array(list(itertools.product(*axes)), dtype=float)


def scipy_lbfgsb(objective: Approach3Objective, theta0: np.ndarray, row=None, ftol: float | None = None,
                 gtol: float | None = None):
    """One scipy L-BFGS-B run (no bounds, analytic gradient) from ``theta0``; scipy's default
    tolerances unless ``ftol``/``gtol`` are given (then the objective is divided by its value at
    ``theta0`` first, which makes both tests relative to the objective's size)."""
    theta0 = np.asarray(theta0, dtype=float)
    if ftol is None and gtol is None:
        return minimize(objective.single, theta0, args=(row,), jac=True, method="L-BFGS-B")
    scale = abs(objective.single(theta0, row)[0]) or 1.0

    def scaled(theta):
        f, g = objective.single(theta, row)
        return f / scale, g / scale

    options = {"maxiter": 15000, "maxfun": 30000}
    if ftol is not None:
        options["ftol"] = ftol
    if gtol is not None:
        options["gtol"] = gtol
    run = minimize(scaled, theta0, jac=True, method="L-BFGS-B", options=options)
    run.fun = run.fun * scale
    return run


def distinct_optima(x: np.ndarray, fun: np.ndarray, count: int, min_distance: float = 0.05
                    ) -> np.ndarray:
    """Indices of up to ``count`` end points, best first, each farther than ``min_distance``
    (largest absolute parameter difference) from every one already chosen."""
    chosen: List[int] = []
    for i in np.argsort(np.where(np.isfinite(fun), fun, np.inf)):
        if not np.isfinite(fun[i]):
            break
        if all(np.abs(x[i] - x[j]).max() > min_distance for j in chosen):
            chosen.append(int(i))
            if len(chosen) == count:
                break
    return np.array(chosen, dtype=int)


@dataclass
class Approach3Fit:
    """A fitted Approach 3 model and how it was found.

    ``theta`` is ``(a, b, e, alpha, beta)``; ``objective`` the Huber objective there.
    ``start_points``, ``endpoints`` and ``endpoint_objectives`` keep every start and where it
    converged (the bootstrap re-runs the best starts; diagnostics)."""

    theta: np.ndarray
    objective: float
    num_points: int
    num_starts: int
    starts_at_optimum: int
    polished: bool
    start_points: np.ndarray = field(repr=False)
    endpoints: np.ndarray = field(repr=False)
    endpoint_objectives: np.ndarray = field(repr=False)
    batched_iterations: int = 0
    batched_objective: float = float("nan")
    """Best objective of the batched L-BFGS before the refinement."""

    @property
    def E(self) -> float:  # noqa: N802 - the paper's symbol
        """Irreducible loss ``E = exp(e)``."""
        return float(np.exp(self.theta[2]))

    @property
    def A(self) -> float:  # noqa: N802
        """Model-size coefficient ``A = exp(a)``."""
        return float(np.exp(self.theta[0]))

    @property
    def B(self) -> float:  # noqa: N802
        """Data coefficient ``B = exp(b)``."""
        return float(np.exp(self.theta[1]))

    @property
    def alpha(self) -> float:
        """Model-size exponent."""
        return float(self.theta[3])

    @property
    def beta(self) -> float:
        """Data exponent."""
        return float(self.theta[4])

    def params(self) -> Dict[str, float]:
        """``{"E", "A", "B", "alpha", "beta"}`` as plain floats."""
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


def fit_approach3(objective: Approach3Objective, starts: np.ndarray | None = None,
                  polish_top: int = POLISH_TOP) -> Approach3Fit:
    """Fit Approach 3 by L-BFGS from every start (default: the published 4,500-point grid).

    All starts are minimised to convergence together (``minimize_batched``); the ``polish_top``
    best distinct end points are refined with scipy's L-BFGS-B at a tight relative tolerance, and
    the lowest objective among all end points is the fit."""
    starts = start_grid() if starts is None else np.asarray(starts, dtype=float)
    result: BatchedResult = minimize_batched(objective, starts)
    theta, best = result.x[result.best].copy(), float(result.fun[result.best])
    polished = False
    batched = best
    for i in distinct_optima(result.x, result.fun, polish_top):
        run = scipy_lbfgsb(objective, result.x[i], ftol=REFINE_FTOL, gtol=REFINE_GTOL)
        if np.isfinite(run.fun) and run.fun < best:
            theta, best, polished = np.asarray(run.x, dtype=float), float(run.fun), True
    near = result.fun <= best + OPTIMUM_RTOL * abs(best) + 1e-15
    return Approach3Fit(theta=theta, objective=best, num_points=objective.num_points,
                        num_starts=len(starts), starts_at_optimum=int(near.sum()),
                        polished=polished, start_points=starts, endpoints=result.x,
                        endpoint_objectives=result.fun,
                        batched_iterations=int(result.nit.max(initial=0)), batched_objective=batched)
