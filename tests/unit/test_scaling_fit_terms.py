"""What a fit is fitted in terms of: one size measure and one loss source per fit, budgets from the
ladder's labels, run-level resampling, stopping rules that do not depend on the objective's scale,
and the allocation along the measured FLOPs per token."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from lumos_megatron.scaling.fit.allocation import FlopsModel, optimal_allocation_for, predicted_loss
from lumos_megatron.scaling.fit.approach2 import fit_approach2, group_budgets
from lumos_megatron.scaling.fit.approach3 import fit_approach3, scipy_lbfgsb
from lumos_megatron.scaling.fit.bootstrap import resample_counts
from lumos_megatron.scaling.fit.lbfgs import minimize_batched
from lumos_megatron.scaling.fit.objective import Approach3Objective
from lumos_megatron.scaling.fit.table import RunsInputError, read_runs_csv
from lumos_megatron.cli import fit as fit_cli

TRUTH = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.3}
GRID = [(n, d) for n in np.geomspace(1e7, 1e10, 4) for d in np.geomspace(1e9, 1e12, 3)]


def _fit_cli():
    return fit_cli.main


def _csv(path: Path, rows, extra=None) -> Path:
    """A runs table of the GRID points (loss from TRUTH) plus ``extra`` columns per row."""
    extra = extra or {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["params", "tokens", "loss", *extra])
        for i, (n, d) in enumerate(rows):
            writer.writerow([n, d, predicted_loss(TRUTH, n, d), *(values[i] for values in extra.values())])
    return path


def test_mixed_size_measures_are_refused_unless_a_column_is_named(tmp_path, capsys):
    measures = ["non_embedding"] * 6 + ["total"] * 6
    runs = _csv(tmp_path / "runs.csv", GRID, {"size_by": measures, "non_embedding_params": [n for n, _ in GRID]})
    assert _fit_cli()(["--runs", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixes 'non_embedding' (lines 2, 3, 4 ...) and 'total'" in err
    assert not (tmp_path / "out").exists()
    # Naming one column fits one measure.
    assert _fit_cli()(["--runs", str(runs), "--out", str(tmp_path / "ne"), "--bootstrap", "2",
                       "--params-column", "non_embedding_params"]) == 0
    assert json.loads((tmp_path / "ne" / "fit.json").read_text())["settings"]["size_by"] == "non_embedding"


def test_the_fit_reports_the_measure_it_fitted(tmp_path):
    runs = read_runs_csv(_csv(tmp_path / "runs.csv", GRID, {"size_by": ["total"] * 12}))
    assert runs.measure == "total"
    assert read_runs_csv(_csv(tmp_path / "plain.csv", GRID)).measure == "params"


def test_mixed_loss_sources_need_allow_mixed_loss(tmp_path, capsys):
    sources = ["validation"] * 11 + ["train"]
    runs = _csv(tmp_path / "runs.csv", GRID, {"loss_source": sources})
    assert _fit_cli()(["--runs", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "2"]) == 2
    assert "--allow-mixed-loss" in capsys.readouterr().err
    assert _fit_cli()(["--runs", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "2",
                       "--allow-mixed-loss"]) == 0
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert fit["settings"]["loss_source"] == ["validation", "train"]


def test_an_empty_flops_cell_takes_the_flops_model_of_the_others(tmp_path):
    flops = [7.0 * n * d for n, d in GRID]
    flops[3] = ""
    runs = read_runs_csv(_csv(tmp_path / "runs.csv", GRID, {"flops": flops}))
    assert np.isnan(runs.flops[3]) and np.isfinite(runs.flops[[0, 1, 2, 4]]).all()
    model = FlopsModel.measure(runs.params, runs.tokens, runs.flops)
    n, d = GRID[3]
    assert model.compute(n, d) == pytest.approx(7.0 * n * d)
    with pytest.raises(RunsInputError, match="'flops' must be a finite positive"):
        read_runs_csv(_csv(tmp_path / "bad.csv", GRID, {"flops": ["-1"] * 12}))


def test_labelled_budgets_are_not_split_by_the_compute_their_runs_reached():
    # Iterations rounded to the evaluation interval: up to 30 % over the budget on short runs.
    compute = np.array([1.0, 1.3, 1.1, 1.25, 10.0, 12.8, 11.0, 3.0])
    labels = np.array(["C=1", "C=1", "C=1", "C=1", "C=10", "C=10", "C=10", "tpp=20"], dtype=object)
    groups, source = group_budgets(compute, labels)
    assert source == "budget column" and [g.tolist() for g in groups] == [[0, 1, 2, 3], [4, 5, 6]]
    by_compute, source = group_budgets(compute, None)
    assert source == "compute" and len(by_compute) > 3  # what a 5 % tolerance would have done


def test_approach2_takes_c_from_the_labels_and_leaves_other_rows_out():
    n = np.geomspace(1e8, 1e10, 5)
    rows_n, rows_c, rows_loss, labels = [], [], [], []
    for c in (1e20, 1e21):
        for size in n:
            reached = c * (1 + 0.2 * (size == n[-1]))  # one run overshoots its budget by 20 %
            rows_n.append(size), rows_c.append(reached), labels.append(f"C={c:g}")
            rows_loss.append(predicted_loss(TRUTH, size, reached / (6 * size)))
    rows_n.append(3e9), rows_c.append(5e20), labels.append(""), rows_loss.append(2.5)
    result = fit_approach2(np.array(rows_n), np.array(rows_loss), np.array(rows_c), FlopsModel.constant(),
                           np.array(labels, dtype=object))
    assert [b["flops"] for b in result["budgets"]] == [1e20, 1e21]
    assert result["budgets"][0]["achieved_flops"] == [1e20, pytest.approx(1.2e20)]
    assert result["rows_outside_budgets"] == 1 and result["budget_source"] == "budget column"


def test_resamples_draw_whole_runs():
    groups = np.repeat([0, 1, 2, 3], 3)  # 4 runs, 3 evaluations each
    counts = resample_counts(groups, 500, seed=1)
    assert counts.shape == (500, 12)
    per_run = counts.reshape(500, 4, 3)
    assert (per_run == per_run[:, :, :1]).all()  # a run's rows are drawn together
    assert (per_run[:, :, 0].sum(axis=1) == 4).all()  # as many runs drawn as there are
    # One row per run: the classic row bootstrap, draw for draw.
    assert np.array_equal(resample_counts(np.arange(12), 7, 3), resample_counts(12, 7, 3))


class _Scaled:
    """An Approach 3 objective times a constant (what a smaller ladder does to its size)."""

    def __init__(self, objective: Approach3Objective, factor: float):
        self.objective, self.factor = objective, factor
        self.num_points = objective.num_points

    def __call__(self, theta, rows=None):
        f, g = self.objective(theta, rows)
        return f * self.factor, g * self.factor

    def single(self, theta, row=None):
        f, g = self.objective.single(theta, row)
        return f * self.factor, g * self.factor


def _noisy_objective():
    rng = np.random.default_rng(0)
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6)))
    loss = predicted_loss(TRUTH, n, d) * np.exp(0.01 * rng.standard_normal(n.size))
    return Approach3Objective(np.log(n), np.log(d), np.log(loss))


def test_stopping_does_not_depend_on_the_objectives_scale():
    objective = _noisy_objective()
    starts = np.array([[5.0, 5.0, 0.5, 0.5, 0.5], [10.0, 10.0, 0.0, 1.0, 1.0], [0.0, 20.0, -0.5, 0.0, 1.5]])
    plain = minimize_batched(objective, starts)
    scaled = minimize_batched(_Scaled(objective, 1e-3), starts)
    # Same path up to rounding near the optimum, where the 1e-6 relative test fires.
    assert np.abs(plain.nit - scaled.nit).max() <= 5 and np.array_equal(plain.status, scaled.status)
    assert np.allclose(plain.x, scaled.x, rtol=0, atol=1e-4)
    assert np.allclose(plain.fun * 1e-3, scaled.fun, rtol=1e-6, atol=0)
    # scipy's own test divides by max(|f|, 1): on the scaled problem it stops far from the optimum.
    assert scipy_lbfgsb(_Scaled(objective, 1e-3), starts[0]).fun > 10 * 1e-3 * scipy_lbfgsb(objective, starts[0]).fun
    a, b = fit_approach3(objective), fit_approach3(_Scaled(objective, 1e-3))
    assert np.allclose(a.theta, b.theta, rtol=0, atol=1e-6)
    assert b.objective == pytest.approx(1e-3 * a.objective, rel=1e-9)
    assert b.objective <= b.batched_objective


def test_the_allocation_follows_the_measured_flops_per_token():
    # FLOPs per token growing slower than N (an LM head and attention share that fall with size).
    sizes = np.geomspace(1e7, 1e10, 7)
    per_token = 6 * sizes + 4e3 * sizes ** (2 / 3)
    model = FlopsModel.measure(sizes, np.full(7, 1e10), per_token * 1e10)
    assert model.per_token(sizes) == pytest.approx(per_token, rel=1e-12)
    for c in (1e19, 1e21):
        (n_opt,), (d_opt,) = optimal_allocation_for(TRUTH, c, model)
        assert model.per_token(n_opt) * d_opt == pytest.approx(c)
        best = minimize_scalar(lambda x: predicted_loss(TRUTH, np.exp(x), c / model.per_token(np.exp(x))),
                               bounds=(10.0, 30.0), method="bounded", options={"xatol": 1e-10})
        assert n_opt == pytest.approx(np.exp(best.x), rel=1e-5)
