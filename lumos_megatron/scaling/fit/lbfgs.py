"""Limited-memory BFGS run on many starting points at once, vectorised with numpy.

The published fitting recipe runs one L-BFGS optimisation per starting point of a 4,500-point grid
and keeps the best converged result. Run one start at a time, the cost is dominated by fixed
per-call costs (a few dozen numpy calls on arrays of a few hundred runs, and scipy's bookkeeping),
not by arithmetic. This module runs the same kind of optimisation for every start
*simultaneously*: every iteration evaluates the objective and gradient of all still-running starts
in one batched call and advances each start independently (its own curvature memory, step length
and stopping test). Converged starts leave the batch, so the work shrinks as the run goes on.

Per start, an iteration is textbook L-BFGS (Nocedal and Wright, Numerical Optimization, Alg. 7.4 and
7.5): the two-loop recursion gives the search direction from the last ``memory`` curvature pairs,
a backtracking line search accepts the first step satisfying the Armijo condition, and the pair
``(s, y)`` is stored only when ``s . y > 0`` (so the implicit Hessian stays positive definite).

**Stopping is scale-free.** A start stops when the relative reduction of the objective
``(f_k - f_k+1) / max(|f_k|, |f_k+1|) <= ftol`` (default 1e-6) or the largest gradient entry
``<= gtol |f_k+1|`` (default 1e-5),
or at an iteration limit or a failed line search. scipy's L-BFGS-B divides the reduction by
``max(|f_k|, |f_k+1|, 1)`` and tests the gradient in absolute terms, so on an objective far below 1
(the Huber objective of a scaling fit is ~1e-3, smaller on small ladders) its test is absolute and
stops early; multiplying the objective by a constant would change where it stops. Here it does not:
the iterates, the stopping point and the result of ``c f`` equal those of ``f`` for any ``c > 0``
(up to rounding; the first step of a start is normalised by the gradient's length).
The trajectories differ from scipy's (its line search is Moré-Thuente), so a start may end at a
different local optimum than scipy would; what matters for the recipe, the best optimum over the grid,
is checked against the per-start scipy loop in ``tools/bench/scaling_fit.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

#: Relative-reduction tolerance of the batched starts. About what scipy's default test (2.2e-9,
#: absolute below |f| = 1) amounts to on an objective of 1e-3, but the same at every scale; the
#: best end points are then refined at a tight tolerance (``approach3.REFINE_FTOL``).
FTOL = 1e-6
#: Gradient tolerance relative to |f|: stop when every gradient entry is below ``GTOL |f|``.
GTOL = 1e-5
#: Floor of the relative tests' denominator (an objective of exactly 0 stops on no reduction).
_TINY = 1e-300

BatchedFunGrad = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchedResult:
    """Final state of every start: ``x`` ``[S, d]``, ``fun`` ``[S]``, ``grad`` ``[S, d]``,
    ``nit`` iterations used, and ``status`` (0 converged, 1 iteration limit, 2 line search failed)."""

    x: np.ndarray
    fun: np.ndarray
    grad: np.ndarray
    nit: np.ndarray
    status: np.ndarray
    evaluations: int

    @property
    def best(self) -> int:
        """Index of the start with the lowest final objective (non-finite values never win)."""
        return int(np.argmin(np.where(np.isfinite(self.fun), self.fun, np.inf)))


def _two_loop(grad: np.ndarray, s_hist: np.ndarray, y_hist: np.ndarray, rho: np.ndarray,
              gamma: np.ndarray) -> np.ndarray:
    """L-BFGS direction ``-H g`` for each row; history slots with ``rho == 0`` are empty."""
    q = grad.copy()
    memory = s_hist.shape[1]
    alphas = np.empty((grad.shape[0], memory))
    for i in range(memory - 1, -1, -1):  # newest pair is the last slot
        alphas[:, i] = rho[:, i] * np.einsum("ij,ij->i", s_hist[:, i], q)
        q -= alphas[:, i:i + 1] * y_hist[:, i]
    r = gamma[:, None] * q
    for i in range(memory):
        beta = rho[:, i] * np.einsum("ij,ij->i", y_hist[:, i], r)
        r += s_hist[:, i] * (alphas[:, i] - beta)[:, None]
    return -r


def _row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, scaled by its largest entry first so that huge (finite)
    gradients far from the optimum do not overflow when squared."""
    largest = np.abs(a).max(axis=1)
    safe = np.where(largest > 0, largest, 1.0)
    return largest * np.linalg.norm(a / safe[:, None], axis=1)


def minimize_batched(fun_grad: BatchedFunGrad, x0: np.ndarray, *, memory: int = 10,
                     ftol: float = FTOL, gtol: float = GTOL, max_iter: int = 15000,
                     max_backtracks: int = 40, armijo: float = 1e-4,
                     rows: Optional[np.ndarray] = None) -> BatchedResult:
    """Minimise from every row of ``x0`` (``[S, d]``) independently with L-BFGS.

    ``fun_grad(x, rows)`` returns values ``[k]`` and gradients ``[k, d]`` for ``k`` points; ``rows``
    (default ``arange(S)``) is passed through so the objective can give each start its own data
    (bootstrap weights). Returns the final state of every start, in the order of ``x0``."""
    x = np.array(x0, dtype=float)
    n_start, dim = x.shape
    rows = np.arange(n_start) if rows is None else np.asarray(rows)
    fun, grad = fun_grad(x, rows)
    evaluations = 1
    out = BatchedResult(x.copy(), fun.copy(), grad.copy(), np.zeros(n_start, int),
                        np.zeros(n_start, int), 0)
    s_hist = np.zeros((n_start, memory, dim))
    y_hist = np.zeros((n_start, memory, dim))
    rho = np.zeros((n_start, memory))
    gamma = np.ones(n_start)
    active = np.arange(n_start)  # indices into the outputs of the starts still running
    done = np.abs(grad).max(axis=1) <= gtol * np.maximum(np.abs(fun), _TINY)
    iteration = 0
    while True:
        keep = ~done
        active, x, fun, grad = active[keep], x[keep], fun[keep], grad[keep]
        s_hist, y_hist, rho, gamma = s_hist[keep], y_hist[keep], rho[keep], gamma[keep]
        if active.size == 0 or iteration >= max_iter:
            out.status[active] = 1
            break
        iteration += 1
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite direction is reset below
            direction = _two_loop(grad, s_hist, y_hist, rho, gamma)
            slope = np.einsum("ij,ij->i", grad, direction)
        # Not a finite descent direction: forget the memory, go down the gradient.
        reset = ~(slope < 0) | ~np.isfinite(direction).all(axis=1)
        if reset.any():
            rho[reset] = 0.0
            gamma[reset] = 1.0
            direction[reset] = -grad[reset]
            slope[reset] = -np.einsum("ij,ij->i", grad[reset], grad[reset])
        # First step without curvature information: unit length, as scipy does.
        step = np.where(rho.any(axis=1), 1.0, 1.0 / np.maximum(_row_norms(direction), 1e-300))
        new_x = np.empty_like(x)
        new_fun = np.full_like(fun, np.inf)
        new_grad = np.empty_like(grad)
        searching = np.arange(active.size)
        for _ in range(max_backtracks):
            trial = x[searching] + step[searching, None] * direction[searching]
            f_t, g_t = fun_grad(trial, rows[active[searching]])
            evaluations += 1
            ok = np.isfinite(f_t) & (f_t <= fun[searching] + armijo * step[searching] * slope[searching])
            accepted = searching[ok]
            new_x[accepted], new_fun[accepted], new_grad[accepted] = trial[ok], f_t[ok], g_t[ok]
            searching = searching[~ok]
            if searching.size == 0:
                break
            step[searching] *= 0.5
        failed = np.zeros(active.size, bool)
        failed[searching] = True
        moved = ~failed
        # Curvature pair update (newest in the last slot) where s.y > 0.
        s_new = new_x - x
        y_new = new_grad - grad
        sy = np.einsum("ij,ij->i", s_new, y_new)
        yy = np.einsum("ij,ij->i", y_new, y_new)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            inv_sy, scaling = 1.0 / sy, sy / yy
        # A pair whose 1/(s.y) or (s.y)/(y.y) is not a finite positive number (curvature lost in
        # underflow on a degenerate objective) would poison the memory with inf/NaN: skip it.
        upd = (moved & (sy > 1e-12 * np.maximum(yy, 1e-300)) & np.isfinite(inv_sy)
               & np.isfinite(scaling) & (scaling > 0))
        if upd.any():
            s_hist[upd] = np.roll(s_hist[upd], -1, axis=1)
            y_hist[upd] = np.roll(y_hist[upd], -1, axis=1)
            rho[upd] = np.roll(rho[upd], -1, axis=1)
            s_hist[upd, -1], y_hist[upd, -1] = s_new[upd], y_new[upd]
            rho[upd, -1] = inv_sy[upd]
            gamma[upd] = scaling[upd]
        reduction = np.where(moved, fun - new_fun, 0.0)
        scale = np.maximum(np.maximum(np.abs(fun), np.where(moved, np.abs(new_fun), 0.0)), _TINY)
        x = np.where(moved[:, None], new_x, x)
        fun = np.where(moved, new_fun, fun)
        grad = np.where(moved[:, None], new_grad, grad)
        converged = moved & ((reduction <= ftol * scale)
                             | (np.abs(grad).max(axis=1) <= gtol * np.maximum(np.abs(fun), _TINY)))
        done = converged | failed
        out.x[active], out.fun[active], out.grad[active] = x, fun, grad
        out.nit[active] = iteration
        out.status[active[failed]] = 2
    out.evaluations = evaluations
    return out
