"""Approach 2 of Hoffmann et al. (2022): IsoFLOP profiles.

Runs that share a training-compute budget form an IsoFLOP profile. For each budget with at least
three distinct model sizes, a parabola ``loss = c2 (log N)**2 + c1 log N + c0`` is fitted by least
squares; its vertex ``log N* = -c1 / (2 c2)`` is the loss-optimal model size at that budget, and the
optimal token count is ``D* = C / (k N*)`` with the same FLOPs-per-(N D) factor ``k`` as the
allocation (6, or fitted from a ``flops`` column). Power laws ``N* = k_N C**a_N`` and
``D* = k_D C**a_D`` are then fitted by least squares in log-log space over the usable budgets.

A budget is *usable* when its parabola opens upward and its vertex lies inside the range of model
sizes it sampled (an extrapolated minimum says little). Budgets come from a ``budget`` column when the
table has one; otherwise runs whose compute agrees within a relative tolerance (default 5 %) are one
budget (sorted by compute, a new budget starts when a run exceeds the first run of the current one
by more than the tolerance). With fewer than two usable budgets the power laws are skipped, with a note.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

#: Runs whose compute agrees within this relative tolerance share a budget.
BUDGET_RTOL = 0.05
#: Fewest distinct model sizes for an IsoFLOP parabola.
MIN_PROFILE_POINTS = 3


def group_budgets(compute: np.ndarray, labels: Optional[np.ndarray] = None,
                  rtol: float = BUDGET_RTOL) -> List[np.ndarray]:
    """Index arrays of the runs in each budget, in increasing order of compute."""
    if labels is not None:
        groups = [np.flatnonzero(labels == value) for value in dict.fromkeys(labels.tolist())]
        return sorted(groups, key=lambda idx: float(np.median(compute[idx])))
    order = np.argsort(compute, kind="stable")
    groups: List[List[int]] = []
    first = None
    for i in order:
        if first is None or compute[i] > first * (1.0 + rtol):
            groups.append([])
            first = compute[i]
        groups[-1].append(int(i))
    return [np.array(g) for g in groups]


def fit_profile(log_n: np.ndarray, loss: np.ndarray) -> Dict[str, float]:
    """Least-squares parabola of ``loss`` against ``log N``; its coefficients and vertex."""
    c2, c1, c0 = np.polyfit(log_n, loss, 2)
    vertex = -c1 / (2.0 * c2) if c2 != 0 else float("nan")
    return {"c2": float(c2), "c1": float(c1), "c0": float(c0), "log_params_opt": float(vertex),
            "loss_opt": float(c0 - c1 * c1 / (4.0 * c2)) if c2 != 0 else float("nan")}


def fit_power_law(compute: np.ndarray, values: np.ndarray) -> Dict[str, float]:
    """``values = coefficient * compute**exponent`` by least squares in log-log space."""
    slope, intercept = np.polyfit(np.log(compute), np.log(values), 1)
    return {"coefficient": float(np.exp(intercept)), "exponent": float(slope)}


def fit_approach2(params: np.ndarray, loss: np.ndarray, compute: np.ndarray,
                  flops_per_param_token: float, labels: Optional[np.ndarray] = None,
                  rtol: float = BUDGET_RTOL) -> Dict[str, object]:
    """Approach 2 on the runs: per-budget profiles and the ``N*(C)``, ``D*(C)`` power laws.

    Returns the ``approach2`` section of ``fit.json`` (``skipped`` and ``note`` when there is too
    little to fit)."""
    budgets = []
    for idx in group_budgets(compute, labels, rtol):
        entry: Dict[str, object] = {"flops": float(np.exp(np.log(compute[idx]).mean())),
                                    "num_points": int(idx.size), "indices": idx.tolist()}
        log_n = np.log(params[idx])
        if np.unique(log_n).size < MIN_PROFILE_POINTS:
            entry.update(used=False, reason=f"fewer than {MIN_PROFILE_POINTS} model sizes")
        else:
            profile = fit_profile(log_n, loss[idx])
            entry.update(profile)
            inside = log_n.min() <= profile["log_params_opt"] <= log_n.max()
            if profile["c2"] <= 0:
                entry.update(used=False, reason="profile does not open upward")
            elif not inside:
                entry.update(used=False, reason="minimum outside the sampled model sizes")
            else:
                n_opt = float(np.exp(profile["log_params_opt"]))
                entry.update(used=True, params_opt=n_opt,
                             tokens_opt=entry["flops"] / (flops_per_param_token * n_opt))
        budgets.append(entry)
    used = [b for b in budgets if b["used"]]
    result: Dict[str, object] = {"budget_rtol": rtol if labels is None else None,
                                 "budget_source": "budget column" if labels is not None else "compute",
                                 "flops_per_param_token": flops_per_param_token,
                                 "num_budgets": len(budgets), "num_used": len(used), "budgets": budgets}
    if len(used) < 2:
        result.update(skipped=True, note=f"Approach 2 needs at least 2 budgets with a usable IsoFLOP "
                                         f"profile (>= {MIN_PROFILE_POINTS} model sizes, minimum inside "
                                         f"the sampled range); found {len(used)} of {len(budgets)}")
        return result
    c = np.array([b["flops"] for b in used])
    params_law = fit_power_law(c, np.array([b["params_opt"] for b in used]))
    tokens_law = fit_power_law(c, np.array([b["tokens_opt"] for b in used]))
    result.update(skipped=False, params_opt=params_law, tokens_opt=tokens_law,
                  note="" if len(used) >= 3 else "only 2 usable budgets: the power laws pass exactly "
                                                  "through them")
    return result
