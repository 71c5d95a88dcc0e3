"""Compute-optimal model size and token count from a fitted Approach 3 law.

With training compute ``C = k N D`` (``k = 6`` FLOPs per parameter and token for a dense transformer,
forward plus backward), minimising ``L(N, D) = E + A / N**alpha + B / D**beta`` along ``N D = C / k``
sets ``alpha A / N**alpha = beta B / D**beta``, which gives (Hoffmann et al. 2022, Approach 3)

    N*(C) = G (C / k) ** (beta / (alpha + beta)),     D*(C) = (C / k) ** (alpha / (alpha + beta)) / G,
    G = (alpha A / (beta B)) ** (1 / (alpha + beta)).

When the runs table has a ``flops`` column, ``k`` is fitted from it rather than assumed: the geometric
mean of ``C / (N D)`` over the runs (the least-squares fit of ``log C = log k + log N + log D``).
Video models with an attention or LM-head share far from the ``6 N`` rule, or a parameter count
without embeddings, make this factor differ from 6, and using it keeps the allocation consistent with
how the compute budgets were counted.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional

import numpy as np

#: Dense-transformer training FLOPs per parameter and token (forward + backward).
DEFAULT_FLOPS_PER_PARAM_TOKEN = 6.0


def fit_flops_per_param_token(params: np.ndarray, tokens: np.ndarray, flops: np.ndarray) -> Dict[str, float]:
    """Fit ``C ~ k N D``: ``k`` (geometric mean of ``C / (N D)``) and the spread of the ratio."""
    ratio = np.log(flops) - np.log(params) - np.log(tokens)
    return {"k": float(np.exp(ratio.mean())), "min": float(np.exp(ratio.min())),
            "max": float(np.exp(ratio.max())), "log_std": float(ratio.std())}


def allocation_exponents(alpha: float, beta: float) -> Dict[str, float]:
    """Exponents of ``N* ~ C**a`` and ``D* ~ C**b``: ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``."""
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


def has_optimal_allocation(params: Dict[str, float]) -> bool:
    """Whether ``L(N, C/(kN))`` has an interior minimum: both exponents positive. Otherwise more of
    one factor never hurts and there is no compute-optimal split (e.g. runs that all sit on the same
    loss floor, as a ladder on random tokens does)."""
    return params["alpha"] > 0 and params["beta"] > 0


def optimal_allocation(params: Dict[str, float], compute, flops_per_param_token: float = DEFAULT_FLOPS_PER_PARAM_TOKEN):
    """``(N*, D*)`` at training compute ``compute`` (scalar or array) for fitted ``params``
    (``E``, ``A``, ``B``, ``alpha``, ``beta``)."""
    alpha, beta, big_a, big_b = params["alpha"], params["beta"], params["A"], params["B"]
    g = (alpha * big_a / (beta * big_b)) ** (1.0 / (alpha + beta))
    scaled = np.asarray(compute, dtype=float) / flops_per_param_token
    return g * scaled ** (beta / (alpha + beta)), scaled ** (alpha / (alpha + beta)) / g


def predicted_loss(params: Dict[str, float], n, d):
    """``L(N, D) = E + A / N**alpha + B / D**beta``."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def example_budgets(compute: np.ndarray, count_max: int = 8) -> List[float]:
    """Powers of ten from the smallest run's compute to ten times the largest (at most ``count_max``)."""
    low = math.floor(math.log10(float(np.min(compute))))
    high = math.ceil(math.log10(float(np.max(compute)))) + 1
    exps = list(range(low, high + 1))
    if len(exps) > count_max:
        step = math.ceil(len(exps) / count_max)
        exps = exps[::-1][::step][::-1]
    return [10.0 ** e for e in exps]


def allocation_summary(params: Dict[str, float], budgets: Iterable[float],
                       flops_per_param_token: float = DEFAULT_FLOPS_PER_PARAM_TOKEN,
                       factor_fit: Optional[Dict[str, float]] = None) -> Dict[str, object]:
    """The ``allocation`` section of ``fit.json``: formula, exponents, ``G``, the FLOPs factor and
    ``N*``, ``D*``, tokens per parameter and predicted loss at each budget."""
    alpha, beta = params["alpha"], params["beta"]
    if not has_optimal_allocation(params):
        return {"skipped": f"no compute-optimal allocation: the fitted exponents are alpha={alpha:.4g}, "
                           f"beta={beta:.4g}; both must be positive",
                "flops_per_param_token": float(flops_per_param_token), "budgets": []}
    g = (alpha * params["A"] / (beta * params["B"])) ** (1.0 / (alpha + beta))
    rows = []
    for c in budgets:
        n_opt, d_opt = optimal_allocation(params, c, flops_per_param_token)
        rows.append({"flops": float(c), "params": float(n_opt), "tokens": float(d_opt),
                     "tokens_per_param": float(d_opt / n_opt),
                     "loss": float(predicted_loss(params, n_opt, d_opt))})
    exps = allocation_exponents(alpha, beta)
    return {
        "formula": "N* = G (C/k)^(beta/(alpha+beta)), D* = G^-1 (C/k)^(alpha/(alpha+beta)), "
                   "G = (alpha A / (beta B))^(1/(alpha+beta)), C = k N D",
        "params_exponent": exps["a"],
        "tokens_exponent": exps["b"],
        "G": float(g),
        "flops_per_param_token": float(flops_per_param_token),
        "flops_per_param_token_source": "fitted from the flops column" if factor_fit else "assumed (6 N D)",
        "flops_per_param_token_fit": factor_fit,
        "budgets": rows,
    }
