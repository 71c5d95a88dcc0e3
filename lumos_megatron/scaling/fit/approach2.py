"""Approach 2 of Hoffmann et al. (2022): IsoFLOP profiles.

Runs that share a training-compute budget form an IsoFLOP profile. For each budget with at least
three distinct model sizes, a parabola ``loss = c2 (log N)**2 + c1 log N + c0`` is fitted by least
squares; its vertex ``log N* = -c1 / (2 c2)`` is the loss-optimal model size at that budget, and the
optimal token count is ``D* = C / M(N*)`` with the allocation's FLOPs per token ``M``
(``allocation.FlopsModel``). Power laws ``N* = k_N C**a_N`` and ``D* = k_D C**a_D`` are then fitted
by least squares in log-log space over the usable budgets.

A budget is *usable* when its parabola opens upward and its vertex lies inside the range of model
sizes it sampled (an extrapolated minimum says little).

**Which runs form a budget.** The ``budget`` labels when the table has IsoFLOP labels (what a
ladder planned with ``--isoflop`` writes, ``C=1e+18``): one budget per label, whatever compute each
run achieved (rounding a run's iterations never splits its budget), with ``C`` read from the label.
Rows of tokens-per-parameter budgets (``tpp=...``) and unlabelled rows (e.g. intermediate
evaluations) then take no part. Without any IsoFLOP label, runs whose compute agrees within a
relative tolerance (default 5 %) are one budget (sorted by compute, a new budget starts when a run
exceeds the first run of the current one by more than the tolerance).

**Uncertainty.** Given the bootstrap's resampling weights (whole runs drawn with replacement), every
replicate refits the profiles (weighted least squares) and the power laws; the percentile interval
of the exponents is ``params_opt.ci`` / ``tokens_opt.ci``. With fewer than two usable budgets the
power laws are skipped, with a note.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from lumos_megatron.scaling.fit.allocation import FlopsModel

#: Runs whose compute agrees within this relative tolerance share a budget.
BUDGET_RTOL = 0.05
#: Fewest distinct model sizes for an IsoFLOP parabola.
MIN_PROFILE_POINTS = 3


def isoflop_label(label: str) -> bool:
    """Whether a ``budget`` label names an IsoFLOP budget (not empty, not ``tpp=...``)."""
    return bool(label) and not label.startswith("tpp")


def label_flops(label: str) -> Optional[float]:
    """The compute a label states (``C=1e+18`` or a bare number), None when it states none."""
    text = label.split("=", 1)[1] if label.startswith("C=") else label
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def group_budgets(compute: np.ndarray, labels: Optional[np.ndarray] = None,
                  rtol: float = BUDGET_RTOL) -> Tuple[List[np.ndarray], str]:
    """(index arrays of the runs of each budget in increasing order of compute, what grouped
    them): by IsoFLOP label when any row has one, else by compute within ``rtol``."""
    if labels is not None and any(isoflop_label(v) for v in labels.tolist()):
        names = [v for v in dict.fromkeys(labels.tolist()) if isoflop_label(v)]
        groups = [np.flatnonzero(labels == name) for name in names]
        return sorted(groups, key=lambda idx: float(np.median(compute[idx]))), "budget column"
    order = np.argsort(compute, kind="stable")
    groups: List[List[int]] = []
    first = None
    for i in order:
        if first is None or compute[i] > first * (1.0 + rtol):
            groups.append([])
            first = compute[i]
        groups[-1].append(int(i))
    return [np.array(g) for g in groups], "compute"


def fit_profile(log_n: np.ndarray, loss: np.ndarray, weights: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Least-squares parabola of ``loss`` against ``log N`` (row ``weights``: how often each row
    counts); its coefficients and vertex."""
    w = None if weights is None else np.sqrt(weights)  # polyfit weighs residuals, not squares
    c2, c1, c0 = np.polyfit(log_n, loss, 2, w=w)
    vertex = -c1 / (2.0 * c2) if c2 != 0 else float("nan")
    return {"c2": float(c2), "c1": float(c1), "c0": float(c0), "log_params_opt": float(vertex),
            "loss_opt": float(c0 - c1 * c1 / (4.0 * c2)) if c2 != 0 else float("nan")}


def fit_power_law(compute: np.ndarray, values: np.ndarray) -> Dict[str, float]:
    """``values = coefficient * compute**exponent`` by least squares in log-log space."""
    slope, intercept = np.polyfit(np.log(compute), np.log(values), 1)
    return {"coefficient": float(np.exp(intercept)), "exponent": float(slope)}


def _usable_vertex(log_n: np.ndarray, loss: np.ndarray, weights: Optional[np.ndarray] = None
                   ) -> Tuple[Optional[Dict[str, float]], str]:
    """(profile, '') when the profile gives a usable minimum, else (profile or None, reason)."""
    if np.unique(log_n).size < MIN_PROFILE_POINTS:
        return None, f"fewer than {MIN_PROFILE_POINTS} model sizes"
    profile = fit_profile(log_n, loss, weights)
    if profile["c2"] <= 0:
        return profile, "profile does not open upward"
    if not log_n.min() <= profile["log_params_opt"] <= log_n.max():
        return profile, "minimum outside the sampled model sizes"
    return profile, ""


def _exponents(budget_flops: List[float], n_opt: List[float], model: FlopsModel) -> Optional[Tuple[float, float]]:
    if len(n_opt) < 2:
        return None
    c, n = np.array(budget_flops), np.array(n_opt)
    return (fit_power_law(c, n)["exponent"], fit_power_law(c, c / model.per_token(n))["exponent"])


def bootstrap_exponents(params: np.ndarray, loss: np.ndarray, groups: List[np.ndarray],
                        budget_flops: List[float], model: FlopsModel, weights: np.ndarray) -> np.ndarray:
    """``[R, 2]`` exponents ``(a_N, a_D)`` refitted on each resample (rows of ``weights``; NaN
    where fewer than two budgets stay usable)."""
    out = np.full((weights.shape[0], 2), np.nan)
    for r, w in enumerate(weights):
        c_used, n_used = [], []
        for idx, c in zip(groups, budget_flops):
            keep = idx[w[idx] > 0]
            profile, reason = _usable_vertex(np.log(params[keep]), loss[keep], w[keep]) if keep.size else (None, "empty")
            if profile is not None and not reason:
                c_used.append(c)
                n_used.append(float(np.exp(profile["log_params_opt"])))
        found = _exponents(c_used, n_used, model)
        if found is not None:
            out[r] = found
    return out


def fit_approach2(params: np.ndarray, loss: np.ndarray, compute: np.ndarray, model: FlopsModel,
                  labels: Optional[np.ndarray] = None, rtol: float = BUDGET_RTOL,
                  resample_weights: Optional[np.ndarray] = None, ci: float = 0.95) -> Dict[str, object]:
    """Approach 2 on the runs: per-budget profiles and the ``N*(C)``, ``D*(C)`` power laws, with
    percentile intervals of their exponents when ``resample_weights`` (``[R, P]``) are given.

    Returns the ``approach2`` section of ``fit.json`` (``skipped`` and ``note`` when there is too
    little to fit)."""
    groups, source = group_budgets(compute, labels, rtol)
    budgets, budget_flops = [], []
    for idx in groups:
        stated = label_flops(str(labels[idx[0]])) if source == "budget column" else None
        c = stated if stated is not None else float(np.exp(np.log(compute[idx]).mean()))
        budget_flops.append(c)
        entry: Dict[str, object] = {"flops": c, "label": str(labels[idx[0]]) if source == "budget column" else "",
                                    "achieved_flops": [float(compute[idx].min()), float(compute[idx].max())],
                                    "num_points": int(idx.size), "indices": idx.tolist()}
        profile, reason = _usable_vertex(np.log(params[idx]), loss[idx])
        if profile is not None:
            entry.update(profile)
        if reason:
            entry.update(used=False, reason=reason)
        else:
            n_opt = float(np.exp(profile["log_params_opt"]))
            entry.update(used=True, params_opt=n_opt, tokens_opt=float(c / model.per_token(n_opt)))
        budgets.append(entry)
    used = [b for b in budgets if b["used"]]
    grouped = sum(int(idx.size) for idx in groups)
    result: Dict[str, object] = {"budget_rtol": rtol if source == "compute" else None,
                                 "budget_source": source, "rows_outside_budgets": int(len(loss) - grouped),
                                 "flops_model": model.source,
                                 "num_budgets": len(budgets), "num_used": len(used), "budgets": budgets}
    if len(used) < 2:
        result.update(skipped=True, note=f"Approach 2 needs at least 2 budgets with a usable IsoFLOP "
                                         f"profile (>= {MIN_PROFILE_POINTS} model sizes, minimum inside "
                                         f"the sampled range); found {len(used)} of {len(budgets)}")
        return result
    c = np.array([b["flops"] for b in used])
    params_law = fit_power_law(c, np.array([b["params_opt"] for b in used]))
    tokens_law = fit_power_law(c, np.array([b["tokens_opt"] for b in used]))
    if resample_weights is not None:
        samples = bootstrap_exponents(params, loss, groups, budget_flops, model, resample_weights)
        valid = np.isfinite(samples[:, 0])
        tail = 100.0 * (1.0 - ci) / 2.0
        for law, column in ((params_law, 0), (tokens_law, 1)):
            if valid.sum() >= 2:
                low, high = np.percentile(samples[valid, column], [tail, 100.0 - tail])
                law["ci"] = [float(low), float(high)]
            law["bootstrap_valid"] = int(valid.sum())
            law["bootstrap_resamples"] = int(samples.shape[0])
    result.update(skipped=False, params_opt=params_law, tokens_opt=tokens_law,
                  note="" if len(used) >= 3 else "only 2 usable budgets: the power laws pass exactly "
                                                  "through them")
    return result
