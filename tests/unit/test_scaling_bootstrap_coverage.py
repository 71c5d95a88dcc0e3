"""Run-level bootstrap coverage on synthetic ladders with several evaluations per run.

Each run's evaluations share the run's own offset (its seed, data order and schedule: what makes
evaluations of one run move together), so rows are not independent observations. Over many
synthetic ladders, the interval from resampling whole runs must cover the true exponent about as
often as it claims; resampling rows treats a run's evaluations as separate evidence and covers it
far less often. Slow: dozens of fits with bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from lumos_megatron.scaling.fit.allocation import predicted_loss
from lumos_megatron.scaling.fit.approach3 import fit_approach3
from lumos_megatron.scaling.fit.bootstrap import bootstrap_approach3
from lumos_megatron.scaling.fit.objective import Approach3Objective

TRUTH = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.3}
LADDERS, RESAMPLES, LEVEL = 16, 40, 0.9


def _ladder(seed: int):
    """4 sizes x 4 token budgets; every run evaluated at 1/4, 1/2, 3/4 and all of its tokens; the
    log loss carries a per-run offset (sd 1 %) and a per-evaluation one (sd 0.1 %)."""
    rng = np.random.default_rng(seed)
    n, d, run = [], [], []
    for i, size in enumerate(np.geomspace(1e7, 1e10, 4)):
        for j, tokens in enumerate(np.geomspace(1e9, 1e12, 4)):
            for frac in (0.25, 0.5, 0.75, 1.0):
                n.append(size), d.append(frac * tokens), run.append(4 * i + j)
    n, d, run = np.array(n), np.array(d), np.array(run)
    offset = 0.01 * rng.standard_normal(16)[run] + 0.001 * rng.standard_normal(n.size)
    return n, d, predicted_loss(TRUTH, n, d) * np.exp(offset), run


def _covered(objective, fit, groups, seed):
    """Which of alpha and beta the run-level (``groups``) or row-level (None) interval covers."""
    boot = bootstrap_approach3(objective, fit, RESAMPLES, seed=seed, grid_starts=8, groups=groups)
    ci = boot.intervals(LEVEL)
    return np.array([ci[name][0] <= TRUTH[name] <= ci[name][1] for name in ("alpha", "beta")])


@pytest.mark.slow
def test_run_level_intervals_cover_and_row_level_ones_do_not():
    covered = {"runs": np.zeros(2, int), "rows": np.zeros(2, int)}
    for seed in range(LADDERS):
        n, d, loss, run = _ladder(seed)
        objective = Approach3Objective(np.log(n), np.log(d), np.log(loss))
        fit = fit_approach3(objective)
        covered["runs"] += _covered(objective, fit, run, seed)
        covered["rows"] += _covered(objective, fit, None, seed)
    # 90 % intervals of alpha and beta over 16 ladders: the run-level ones cover the truth about as
    # often as claimed (14 and 15 of 16 when this was written), the row-level ones clearly less
    # often (10 and 12): together at least 5 fewer.
    assert (covered["runs"] >= 12).all(), covered
    assert covered["rows"].sum() <= covered["runs"].sum() - 5, covered
