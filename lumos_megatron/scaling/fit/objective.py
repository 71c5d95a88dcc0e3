"""The Approach 3 loss model and its fitting objective, evaluated for many parameter vectors at once.

The parametric loss of Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models",
Approach 3, is ``L(N, D) = E + A / N**alpha + B / D**beta`` for a model of N parameters trained on
D tokens. Following their fitting recipe (and the replication of Besiroglu et al. 2024, "Chinchilla
Scaling: A replication attempt"), the fit works in log space with the parameter vector

    theta = (a, b, e, alpha, beta),   a = log A, b = log B, e = log E,

so that ``log L_pred = LSE(a - alpha log N, b - beta log D, e)`` (LSE: log-sum-exp of the three
terms). The objective is the sum over runs of ``Huber_delta(log L_pred - log L_obs)``; the Huber
function is ``r**2 / 2`` for ``|r| <= delta`` and ``delta (|r| - delta / 2)`` beyond, so with the
published ``delta = 1e-3`` it is nearly an L1 fit of the log residuals.

The gradient is analytic: the derivative of the LSE with respect to each of its three terms is that
term's softmax weight ``w_k``, and the Huber derivative is the residual clipped to ``[-delta, delta]``.
With ``h = clip(r)``: ``d/da = sum h w_1``, ``d/db = sum h w_2``, ``d/de = sum h w_3``,
``d/dalpha = -sum h w_1 log N`` and ``d/dbeta = -sum h w_2 log D``.

Everything here is vectorised over a batch of parameter vectors (rows of a ``[S, 5]`` array), each
optionally with its own non-negative weights per run (bootstrap resamples are integer weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: Order of the entries of a parameter vector.
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")

#: The published Huber threshold on log residuals.
HUBER_DELTA = 1e-3

#: Elements of one block's ``[rows, points]`` temporaries. About 94 KiB of float64 each: below
#: glibc's 128 KiB mmap threshold, so the temporaries are reused from the heap and stay in cache
#: instead of being mapped, faulted in and zeroed on every call (3-5x slower per element here).
BLOCK_ELEMENTS = 12_000


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Elementwise Huber function: ``r**2 / 2`` inside ``[-delta, delta]``, linear with slope delta outside."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def predict_log_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """``log L_pred`` of the runs ``(log_n, log_d)`` under parameter vector(s) ``theta``.

    ``theta`` is ``[5]`` (result ``[P]``) or ``[S, 5]`` (result ``[S, P]``)."""
    th = np.atleast_2d(np.asarray(theta, dtype=float))
    terms = np.stack([th[:, 0:1] - th[:, 3:4] * log_n, th[:, 1:2] - th[:, 4:5] * log_d,
                      np.broadcast_to(th[:, 2:3], (th.shape[0], log_n.size))])
    top = terms.max(axis=0)
    out = top + np.log(np.exp(terms - top).sum(axis=0))
    return out[0] if np.ndim(theta) == 1 else out


def predict_loss(theta: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``L(N, D)`` for parameter vector ``theta`` (shape ``[5]``) at arrays ``n`` and ``d``."""
    a, b, e, alpha, beta = np.asarray(theta, dtype=float)
    return np.exp(e) + np.exp(a - alpha * np.log(n)) + np.exp(b - beta * np.log(d))


@dataclass
class Approach3Objective:
    """The Huber/LSE objective on a fixed set of runs, with batched value-and-gradient.

    ``log_n``, ``log_d`` and ``log_loss`` are the runs' ``log N``, ``log D`` and ``log L`` (``[P]``).
    ``row_weights`` (``[R, P]``, optional) gives each batch row its own weight per run; a call
    then names which weight row each parameter vector uses (``rows``)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray
    delta: float = HUBER_DELTA
    row_weights: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.log_n = np.ascontiguousarray(self.log_n, dtype=float)
        self.log_d = np.ascontiguousarray(self.log_d, dtype=float)
        self.log_loss = np.ascontiguousarray(self.log_loss, dtype=float)
        # [P, 2] design blocks so that the gradient sums are two small matrix products.
        self._ones_logn = np.stack([np.ones_like(self.log_n), self.log_n], axis=1)
        self._ones_logd = np.stack([np.ones_like(self.log_d), self.log_d], axis=1)

    @property
    def num_points(self) -> int:
        """Number of runs P."""
        return int(self.log_n.size)

    def __call__(self, theta: np.ndarray, rows: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
        """Objective values ``[S]`` and gradients ``[S, 5]`` at the parameter vectors ``theta`` ``[S, 5]``.

        With ``row_weights`` set, ``rows`` (``[S]`` ints) selects each vector's weight row. Large
        batches are evaluated in blocks of about ``BLOCK_ELEMENTS / P`` vectors."""
        th = np.asarray(theta, dtype=float)
        block = max(1, BLOCK_ELEMENTS // self.num_points)
        if th.shape[0] <= block:
            return self._block(th, rows)
        value = np.empty(th.shape[0])
        grad = np.empty((th.shape[0], 5))
        for lo in range(0, th.shape[0], block):
            hi = lo + block
            value[lo:hi], grad[lo:hi] = self._block(th[lo:hi], None if rows is None else rows[lo:hi])
        return value, grad

    def _block(self, th: np.ndarray, rows: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        t1 = th[:, 0:1] - th[:, 3:4] * self.log_n
        t2 = th[:, 1:2] - th[:, 4:5] * self.log_d
        t3 = th[:, 2:3]
        top = np.maximum(np.maximum(t1, t2), t3)
        w1 = np.exp(t1 - top)
        w2 = np.exp(t2 - top)
        w3 = np.exp(t3 - top)
        total = w1 + w2 + w3
        resid = top + np.log(total) - self.log_loss
        clipped = np.clip(resid, -self.delta, self.delta)
        # Huber value written through the clipped residual: c (|r| - |c| / 2) equals both branches.
        value = clipped * (resid - 0.5 * clipped)
        if self.row_weights is not None:
            weights = self.row_weights[rows]
            value *= weights
            clipped *= weights
        clipped /= total
        grad = np.empty((th.shape[0], 5))
        grad[:, [0, 3]] = (clipped * w1) @ self._ones_logn
        grad[:, [1, 4]] = (clipped * w2) @ self._ones_logd
        grad[:, 2] = (clipped * w3).sum(axis=1)
        grad[:, 3] *= -1.0
        grad[:, 4] *= -1.0
        return value.sum(axis=1), grad

    def single(self, theta: np.ndarray, row: Optional[int] = None) -> Tuple[float, np.ndarray]:
        """Value and gradient for one parameter vector ``[5]`` (the scipy ``jac=True`` form)."""
        rows = None if row is None else np.array([row])
        f, g = self(np.asarray(theta, dtype=float)[None, :], rows)
        return float(f[0]), g[0]
