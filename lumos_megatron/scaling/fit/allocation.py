"""Compute-optimal model size and token count from a fitted Approach 3 law.

Training compute is ``C = M(N) D``, with ``M(N)`` the training FLOPs per token of a model of size
``N``. For a dense transformer counted the Chinchilla way, ``M(N) = k N`` with ``k = 6``, and
minimising ``L(N, D) = E + A / N**alpha + B / D**beta`` along ``N D = C / k`` gives the closed form
(Hoffmann et al. 2022, Approach 3)

    N*(C) = G (C / k) ** (beta / (alpha + beta)),     D*(C) = (C / k) ** (alpha / (alpha + beta)) / G,
    G = (alpha A / (beta B)) ** (1 / (alpha + beta)).

Video models are not counted that way: attention over long sequences and the visual LM head make
``M(N) / N`` vary with N, and a ladder sized by non-embedding parameters leaves the embedding out
of N but not of the compute. So when the runs table has a ``flops`` column, ``M`` is measured, not
assumed: ``FlopsModel`` takes ``log M`` at each sampled size (mean of ``log(C / D)`` over its rows)
and interpolates it piecewise linearly in ``log N``, extrapolating with the slope of the nearest end
segment. The allocation then minimises ``L(N, C / M(N))`` over N numerically (a log-spaced grid,
then Brent's method around the best grid point); with ``M = k N`` this is the closed form, which the
report still gives for reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import numpy as np
from scipy.optimize import minimize_scalar

#: Dense-transformer training FLOPs per parameter and token (forward + backward).
DEFAULT_FLOPS_PER_PARAM_TOKEN = 6.0


@dataclass(frozen=True)
class FlopsModel:
    """Training FLOPs per token ``M(N)``, piecewise linear in log-log between sampled sizes."""

    log_n: np.ndarray
    """Sampled sizes, ascending (log)."""
    log_m: np.ndarray
    """log FLOPs per token at each size."""
    source: str
    """``measured`` (a flops column) or ``assumed``."""

    @classmethod
    def constant(cls, k: float = DEFAULT_FLOPS_PER_PARAM_TOKEN) -> "FlopsModel":
        """``M(N) = k N``."""
        return cls(np.array([0.0, 1.0]), np.array([math.log(k), math.log(k) + 1.0]), f"assumed ({k:g} N D)")

    @classmethod
    def measure(cls, params: np.ndarray, tokens: np.ndarray, flops: Optional[np.ndarray]) -> Optional["FlopsModel"]:
        """From the rows with a finite ``flops`` value; None when there is none."""
        if flops is None:
            return None
        ok = np.isfinite(flops)
        if not ok.any():
            return None
        log_n, log_m = np.log(params[ok]), np.log(flops[ok]) - np.log(tokens[ok])
        sizes = np.unique(log_n)
        means = np.array([log_m[log_n == s].mean() for s in sizes])
        if sizes.size == 1:  # one size: M proportional to N through it
            sizes, means = np.array([sizes[0], sizes[0] + 1.0]), np.array([means[0], means[0] + 1.0])
        return cls(sizes, means, "measured (flops column)")

    def per_token(self, n) -> np.ndarray:
        """``M(N)`` at ``n`` (scalar or array)."""
        x = np.log(np.asarray(n, dtype=float))
        inside = np.interp(x, self.log_n, self.log_m)
        lo_slope = (self.log_m[1] - self.log_m[0]) / (self.log_n[1] - self.log_n[0])
        hi_slope = (self.log_m[-1] - self.log_m[-2]) / (self.log_n[-1] - self.log_n[-2])
        y = np.where(x < self.log_n[0], self.log_m[0] + lo_slope * (x - self.log_n[0]),
                     np.where(x > self.log_n[-1], self.log_m[-1] + hi_slope * (x - self.log_n[-1]), inside))
        return np.exp(y)

    def compute(self, n, d) -> np.ndarray:
        """Training compute ``M(N) D``."""
        return self.per_token(n) * np.asarray(d, dtype=float)

    def summary(self) -> Dict[str, object]:
        """For ``fit.json``: source and ``M(N) / N`` at every sampled size."""
        if self.source.startswith("assumed"):
            return {"source": self.source, "flops_per_param_token": float(math.exp(self.log_m[0]))}
        n = np.exp(self.log_n)
        ratio = np.exp(self.log_m) / n
        return {"source": self.source, "sizes": n.tolist(), "flops_per_token": np.exp(self.log_m).tolist(),
                "flops_per_param_token": ratio.tolist(),
                "flops_per_param_token_range": [float(ratio.min()), float(ratio.max())]}


def allocation_exponents(alpha: float, beta: float) -> Dict[str, float]:
    """Exponents of ``N* ~ C**a`` and ``D* ~ C**b`` when ``M = k N``: ``a = beta / (alpha + beta)``,
    ``b = alpha / (alpha + beta)``."""
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


def has_optimal_allocation(params: Dict[str, float]) -> bool:
    """Whether ``L(N, C/M(N))`` has an interior minimum: both exponents positive. Otherwise more of
    one factor never hurts and there is no compute-optimal split (e.g. runs that all sit on the same
    loss floor, as a ladder on random tokens does)."""
    return params["alpha"] > 0 and params["beta"] > 0


def optimal_allocation(params: Dict[str, float], compute, flops_per_param_token: float = DEFAULT_FLOPS_PER_PARAM_TOKEN):
    """Closed-form ``(N*, D*)`` at ``compute`` (scalar or array) for fitted ``params`` when ``M = k N``."""
    alpha, beta, big_a, big_b = params["alpha"], params["beta"], params["A"], params["B"]
    g = (alpha * big_a / (beta * big_b)) ** (1.0 / (alpha + beta))
    scaled = np.asarray(compute, dtype=float) / flops_per_param_token
    return g * scaled ** (beta / (alpha + beta)), scaled ** (alpha / (alpha + beta)) / g


def predicted_loss(params: Dict[str, float], n, d):
    """``L(N, D) = E + A / N**alpha + B / D**beta``."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def optimal_size(params: Dict[str, float], compute: float, model: FlopsModel) -> float:
    """``N*`` minimising ``L(N, C / M(N))`` at one budget: a grid over 8 decades around the
    closed-form guess (``k = M / N`` of the model's middle size), refined by bounded Brent."""
    mid = float(np.exp(model.log_n.mean()))
    guess = float(optimal_allocation(params, compute, float(model.per_token(mid)) / mid)[0])
    x = np.linspace(math.log(guess) - 4 * math.log(10), math.log(guess) + 4 * math.log(10), 1601)

    def loss(log_n):
        n = np.exp(log_n)
        return predicted_loss(params, n, compute / model.per_token(n))

    values = loss(x)
    i = int(np.nanargmin(values))
    lo, hi = x[max(i - 1, 0)], x[min(i + 1, x.size - 1)]
    if lo == hi:
        return float(np.exp(x[i]))
    best = minimize_scalar(lambda v: float(loss(np.array(v))), bounds=(lo, hi), method="bounded",
                           options={"xatol": 1e-10})
    return float(np.exp(best.x))


def optimal_allocation_for(params: Dict[str, float], compute, model: FlopsModel):
    """``(N*, D*)`` arrays at each budget of ``compute`` with FLOPs per token ``model``."""
    budgets = np.atleast_1d(np.asarray(compute, dtype=float))
    n = np.array([optimal_size(params, c, model) for c in budgets])
    return n, budgets / model.per_token(n)


def example_budgets(compute: np.ndarray, count_max: int = 8) -> List[float]:
    """Powers of ten from the smallest run's compute to ten times the largest (at most ``count_max``)."""
    low = math.floor(math.log10(float(np.min(compute))))
    high = math.ceil(math.log10(float(np.max(compute)))) + 1
    exps = list(range(low, high + 1))
    if len(exps) > count_max:
        step = math.ceil(len(exps) / count_max)
        exps = exps[::-1][::step][::-1]
    return [10.0 ** e for e in exps]


def allocation_summary(params: Dict[str, float], budgets: Iterable[float], model: FlopsModel) -> Dict[str, object]:
    """The ``allocation`` section of ``fit.json``: N*, D*, tokens per parameter and predicted loss
    at each budget (numeric, with ``model``), the effective exponents between the budgets, and the
    closed-form exponents and ``G`` of ``M = k N`` for reference."""
    alpha, beta = params["alpha"], params["beta"]
    if not has_optimal_allocation(params):
        return {"skipped": f"no compute-optimal allocation: the fitted exponents are alpha={alpha:.4g}, "
                           f"beta={beta:.4g}; both must be positive",
                "flops_model": model.summary(), "budgets": []}
    budgets = [float(c) for c in budgets]
    n_opt, d_opt = optimal_allocation_for(params, budgets, model)
    rows = [{"flops": c, "params": float(n), "tokens": float(d), "tokens_per_param": float(d / n),
             "loss": float(predicted_loss(params, n, d))} for c, n, d in zip(budgets, n_opt, d_opt)]
    exps = allocation_exponents(alpha, beta)
    effective = {}
    if len(budgets) >= 2:
        log_c = np.log(budgets)
        effective = {"params": float(np.polyfit(log_c, np.log(n_opt), 1)[0]),
                     "tokens": float(np.polyfit(log_c, np.log(d_opt), 1)[0])}
    return {
        "method": "N* = argmin_N L(N, C / M(N)), M(N) = training FLOPs per token (flops_model)",
        "formula_constant_k": "N* = G (C/k)^(beta/(alpha+beta)), D* = G^-1 (C/k)^(alpha/(alpha+beta)), "
                              "G = (alpha A / (beta B))^(1/(alpha+beta)), when C = k N D",
        "params_exponent": exps["a"],
        "tokens_exponent": exps["b"],
        "effective_exponents": effective,
        "G": float((alpha * params["A"] / (beta * params["B"])) ** (1.0 / (alpha + beta))),
        "flops_model": model.summary(),
        "budgets": rows,
    }
