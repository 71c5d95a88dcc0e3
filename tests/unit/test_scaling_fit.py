"""Scaling-law fitting (lumos-fit, tools/scaling/fit.py, lumos_megatron.scaling): Approach 3 on the Chinchilla
points and on synthetic ladders, the bootstrap, Approach 2, the allocation formulas, the outputs and
the input errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from lumos_megatron.scaling.fit.objective import Approach3Objective, huber, predict_log_loss
from lumos_megatron.scaling.fit.bootstrap import bootstrap_approach3
from lumos_megatron.scaling.fit.allocation import (
    FlopsModel,
    allocation_exponents,
    optimal_allocation,
    optimal_allocation_for,
    predicted_loss,
)
from lumos_megatron.scaling.fit.approach3 import fit_approach3
from lumos_megatron.scaling.fit.approach2 import fit_approach2
from lumos_megatron.scaling.fit.report import _optimum_provenance
from lumos_megatron.cli import fit as fit_cli

REPO = Path(__file__).resolve().parents[2]
FIT_CLI = REPO / "tools" / "scaling" / "fit.py"  # the wrapper of lumos-fit
CHINCHILLA = REPO / "tests" / "data" / "chinchilla_figure4_points.csv"
PARAMS = ("E", "A", "B", "alpha", "beta")
TRUTH = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.3}


def _write_runs(path: Path, columns, rows) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def _synthetic_ladder(seed: int = 0, sigma: float = 0.005):
    """9 model sizes x 9 token counts, loss = L_true(N, D) x log-normal noise."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e11, 9), np.geomspace(1e8, 1e13, 9)))
    rng = np.random.default_rng(seed)
    return n, d, predicted_loss(TRUTH, n, d) * np.exp(sigma * rng.standard_normal(n.size))


@pytest.fixture(scope="module")
def chinchilla_fit(tmp_path_factory):
    """The CLI on the Chinchilla points (tokens = FLOP / (6 N)), 5 highest losses left out."""
    tmp = tmp_path_factory.mktemp("chinchilla")
    with CHINCHILLA.open(newline="") as handle:
        points = list(csv.DictReader(handle))
    rows = []
    for p in points:
        n, c = float(p["Model Size"]), float(p["Training FLOP"])
        rows.append([repr(n), repr(c / (6.0 * n)), p["loss"]])
    runs = _write_runs(tmp / "runs.csv", ["params", "tokens", "loss"], rows)
    out = tmp / "fit"
    proc = subprocess.run([sys.executable, str(FIT_CLI), "--runs", str(runs), "--out", str(out),
                           "--exclude-top-loss", "5", "--bootstrap", "20"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "fit.json").read_text())


def test_chinchilla_refit_reproduces_the_published_values(chinchilla_fit):
    _, fit = chinchilla_fit
    for key in PARAMS:
        assert isinstance(fit[key], float)
        low, high = fit["ci"][key]
        assert isinstance(low, float) and isinstance(high, float) and low < high
    assert set(fit["ci"]) == set(PARAMS)
    assert abs(fit["E"] - 1.817) < 0.01
    assert abs(fit["alpha"] - 0.3473) < 0.005
    assert abs(fit["beta"] - 0.3672) < 0.005
    assert fit["A"] == pytest.approx(478, rel=0.05)
    assert fit["B"] == pytest.approx(2.14e3, rel=0.05)
    settings = fit["settings"]
    assert settings["num_points"] == 240 and settings["num_points_total"] == 245
    assert len(settings["excluded"]) == 5 and min(e["loss"] for e in settings["excluded"]) > 3.4
    assert settings["num_starts"] == 4500 and settings["huber_delta"] == 1e-3
    assert fit["allocation"]["params_exponent"] == pytest.approx(fit["beta"] / (fit["alpha"] + fit["beta"]))


def test_plots_and_report_are_written(chinchilla_fit):
    out, fit = chinchilla_fit
    for name in fit["plots"].values():
        assert (out / name).stat().st_size > 10_000
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    for name in fit["plots"].values():
        assert f"]({name})" in report
    assert "| alpha | 0.3473" in report and "Compute-optimal allocation" in report
    assert _optimum_provenance(fit["diagnostics"]) in report
    diagnostics = fit["diagnostics"]
    assert diagnostics["objective_refined"] <= diagnostics["objective_batched"]
    assert diagnostics["objective_refined"] == pytest.approx(diagnostics["objective_batched"], rel=1e-6)
    with (out / "bootstrap_samples.csv").open() as handle:
        samples = list(csv.DictReader(handle))
    assert len(samples) == 20 and set(PARAMS) <= set(samples[0])


def test_report_says_when_the_refinement_found_the_optimum():
    text = _optimum_provenance({"starts_at_optimum": 0, "polish_improved": True})
    assert "found by the tight scipy L-BFGS-B refinement" in text and "0 grid starts" in text
    assert _optimum_provenance({"starts_at_optimum": 7, "polish_improved": False}).startswith(
        ", reached by 7 grid starts")


def test_objective_value_and_analytic_gradient():
    n, d, loss = _synthetic_ladder(seed=2, sigma=0.02)
    weights = np.random.default_rng(0).integers(0, 3, size=(2, n.size)).astype(float)
    objective = Approach3Objective(np.log(n), np.log(d), np.log(loss), row_weights=weights)
    theta = np.array([[6.0, 7.5, 0.6, 0.35, 0.3], [5.0, 8.0, 0.4, 0.3, 0.33], [6.2, 7.2, 0.7, 0.36, 0.28]])
    rows = np.array([0, 1, 1])
    value, grad = objective(theta, rows)
    direct = (weights[rows] * huber(predict_log_loss(theta, np.log(n), np.log(d)) - np.log(loss))).sum(axis=1)
    np.testing.assert_allclose(value, direct, rtol=1e-12)
    step = 1e-7
    for j in range(5):
        shift = np.zeros(5)
        shift[j] = step
        numeric = (objective(theta + shift, rows)[0] - objective(theta - shift, rows)[0]) / (2 * step)
        np.testing.assert_allclose(grad[:, j], numeric, rtol=1e-5, atol=1e-9)


def test_synthetic_ladder_recovers_the_parameters_and_the_intervals_cover_them():
    n, d, loss = _synthetic_ladder(seed=0)
    objective = Approach3Objective(np.log(n), np.log(d), np.log(loss))
    fit = fit_approach3(objective)
    got = fit.params()
    # Tolerances: about 3x the largest error over noise seeds 0-5 (E 0.007, alpha 0.007, beta 0.002,
    # A 11 %, B 3 %); the 95 % intervals covered the truth for every one of those seeds.
    assert abs(got["E"] - TRUTH["E"]) < 0.03
    assert abs(got["alpha"] - TRUTH["alpha"]) < 0.02
    assert abs(got["beta"] - TRUTH["beta"]) < 0.01
    assert got["A"] == pytest.approx(TRUTH["A"], rel=0.25)
    assert got["B"] == pytest.approx(TRUTH["B"], rel=0.15)
    intervals = bootstrap_approach3(objective, fit, 40, seed=0).intervals(0.95)
    for key in PARAMS:
        low, high = intervals[key]
        assert low <= TRUTH[key] <= high, (key, intervals[key])


def test_noise_free_ladder_is_fitted_exactly():
    n, d, loss = _synthetic_ladder(sigma=0.0)
    got = fit_approach3(Approach3Objective(np.log(n), np.log(d), np.log(loss))).params()
    for key in PARAMS:
        assert got[key] == pytest.approx(TRUTH[key], rel=2e-3), key


def test_approach2_recovers_the_params_exponent():
    rng = np.random.default_rng(0)
    n_list, d_list = [], []
    for budget in np.geomspace(1e18, 1e22, 5):
        n_opt, _ = optimal_allocation(TRUTH, budget)
        for factor in np.geomspace(1 / 6, 6, 9):
            n = n_opt * factor * np.exp(0.05 * rng.standard_normal())
            n_list.append(n)  # compute jittered by 1 %: the budgets are found by tolerance
            d_list.append(budget * (1 + 0.01 * rng.standard_normal()) / (6 * n))
    n, d = np.array(n_list), np.array(d_list)
    loss = predicted_loss(TRUTH, n, d) * np.exp(0.002 * rng.standard_normal(n.size))
    result = fit_approach2(n, loss, 6 * n * d, FlopsModel.constant(6.0))
    assert not result["skipped"] and result["num_budgets"] == 5 and result["num_used"] == 5
    expected = allocation_exponents(TRUTH["alpha"], TRUTH["beta"])
    assert result["params_opt"]["exponent"] == pytest.approx(expected["a"], abs=0.015)
    assert result["tokens_opt"]["exponent"] == pytest.approx(expected["b"], abs=0.015)
    few = fit_approach2(n[:12], loss[:12], 6 * n[:12] * d[:12], FlopsModel.constant(6.0))
    assert few["skipped"] and "at least 2 budgets" in few["note"]


@pytest.mark.parametrize("k", [6.0, 7.5])
def test_allocation_formula_matches_numeric_minimisation(k):
    for budget in (1e19, 1e21, 1e24):
        n_opt, d_opt = optimal_allocation(TRUTH, budget, k)
        assert n_opt * d_opt * k == pytest.approx(budget, rel=1e-12)
        numeric = minimize_scalar(lambda x, c=budget: predicted_loss(TRUTH, np.exp(x), c / (k * np.exp(x))),
                                  bracket=(10.0, 30.0), tol=1e-12)
        assert np.exp(numeric.x) == pytest.approx(n_opt, rel=1e-4)
        (n_num,), (d_num,) = optimal_allocation_for(TRUTH, budget, FlopsModel.constant(k))
        assert n_num == pytest.approx(n_opt, rel=1e-6) and d_num == pytest.approx(d_opt, rel=1e-6)


def _load_cli():
    return fit_cli


def test_flops_column_sets_the_allocation_factor(tmp_path):
    n, d, loss = _synthetic_ladder(seed=1)
    runs = _write_runs(tmp_path / "runs.csv", ["non_embedding_params", "tokens", "loss", "flops", "note"],
                       [[a, b, c, 7.5 * a * b, "x"] for a, b, c in zip(n, d, loss)])
    assert _load_cli().main(["--runs", str(runs), "--out", str(tmp_path / "out"), "--bootstrap", "4",
                             "--params-column", "non_embedding_params"]) == 0
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    allocation = fit["allocation"]
    assert allocation["flops_model"]["flops_per_param_token"] == pytest.approx([7.5] * 9)
    assert "measured" in allocation["flops_model"]["source"]
    for row in allocation["budgets"]:
        assert 7.5 * row["params"] * row["tokens"] == pytest.approx(row["flops"])
        closed = optimal_allocation(fit, row["flops"], 7.5)
        assert row["params"] == pytest.approx(closed[0], rel=1e-6)
    assert fit["settings"]["params_column"] == "non_embedding_params"
    assert fit["approach2"]["skipped"]  # a full N x D grid has no shared budgets


BAD_INPUTS = {
    "missing_file": (None, None),
    "missing_column": (["params", "loss"], [[1e8, 3.0]] * 10),
    "non_positive": (["params", "tokens", "loss"], [[1e8, 1e9, 3.0]] * 9 + [[1e8, 0, 3.0]]),
    "not_a_number": (["params", "tokens", "loss"], [[1e8, 1e9, 3.0]] * 9 + [[1e8, "nan", 3.0]]),
    "too_few": (["params", "tokens", "loss"], [[1e8 * (i + 1), 1e9, 3.0] for i in range(5)]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    columns, rows = BAD_INPUTS[case]
    runs = tmp_path / "runs.csv"
    if columns is not None:
        _write_runs(runs, columns, rows)
    assert _load_cli().main(["--runs", str(runs), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lumos-fit: error:")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [["--bootstrap", "1"], ["--bootstrap", "x"], ["--ci", "1.5"],
                                   ["--exclude-top-loss", "-1"]])
def test_bad_option_exits_2_with_one_line(extra, tmp_path, capsys):
    runs = _write_runs(tmp_path / "runs.csv", ["params", "tokens", "loss"], [[1e8, 1e9, 3.0]] * 10)
    try:
        status = _load_cli().main(["--runs", str(runs), "--out", str(tmp_path / "out"), *extra])
    except SystemExit as stop:  # argparse
        status = stop.code
    assert status == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bad_input_through_the_command_line(tmp_path):
    runs = _write_runs(tmp_path / "runs.csv", ["params", "tokens", "loss"], [[1e8, 1e9, 3.0]] * 10)
    proc = subprocess.run([sys.executable, str(FIT_CLI), "--runs", str(runs), "--out",
                           str(tmp_path / "out"), "--exclude-top-loss", "5"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "too few runs" in proc.stderr
