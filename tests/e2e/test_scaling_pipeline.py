"""The scaling-law pipeline end to end, as a user runs it on a cluster: make_ladder (IsoFLOP
budgets) → runs (synthetic TensorBoard events whose validation loss follows a known law in the
ladder's size measure, 0.2 % noise) → collect → fit, every tool at its defaults. The fit must give
the law in the ladder's own terms: E, alpha, beta and the Approach 2 exponent inside the bootstrap
intervals, the exponent compared with the true optimum of the law along the ladder's own FLOPs."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from conftest import TINY_RECIPE

E, ALPHA, BETA, A = 1.9, 0.32, 0.30, 300.0
NOISE = 0.002
BUDGETS = ("1e19", "1e20", "1e21", "1e22", "1e23")


def _tool(name: str):
    """The command's module, ``lumos_megatron.cli.<name>`` (lumos-ladder, lumos-collect, lumos-fit)."""
    return importlib.import_module(f"lumos_megatron.cli.{name}")


def _law(b: float):
    """The true law, with data coefficient ``b``."""
    return lambda n, d: E + A / n ** ALPHA + b / d ** BETA


def _write_run(run: dict, size: float, loss, rng) -> None:
    """TensorBoard events of a finished run, as the trainer writes them, at its evaluation steps
    (the per-step ``tokens`` scalar carries every step's tokens since the last one written)."""
    from torch.utils.tensorboard import SummaryWriter

    per_iter = run["tokens"] / run["train_iters"]
    writer = SummaryWriter(log_dir=str(Path(run["run_dir"]) / "tensorboard"))
    previous = 0
    for it in range(run["eval_interval"], run["train_iters"] + 1, run["eval_interval"]):
        writer.add_scalar("tokens", per_iter * (it - previous), it)
        value = loss(size, per_iter * it)
        writer.add_scalar("lm loss", value, it)
        writer.add_scalar("lm loss validation", value * np.exp(NOISE * rng.standard_normal()), it)
        previous = it
    writer.close()


def _true_exponent(runs, key, law, budgets):
    """Slope of log N*(C) over ``budgets``: N* minimises the law along D = C / M(N), with M the
    ladder's FLOPs per token (piecewise log-log through its members, linear beyond)."""
    n = np.array([r[key] for r in runs], dtype=float)
    m = np.array([r["flops"] / r["tokens"] for r in runs])
    order = np.argsort(n)
    ln, lm = np.log(n[order]), np.log(m[order])

    def per_token(size):
        x = np.log(size)
        if x < ln[0]:
            return np.exp(lm[0] + (lm[1] - lm[0]) / (ln[1] - ln[0]) * (x - ln[0]))
        if x > ln[-1]:
            return np.exp(lm[-1] + (lm[-1] - lm[-2]) / (ln[-1] - ln[-2]) * (x - ln[-1]))
        return np.exp(np.interp(x, ln, lm))

    optima = [np.exp(minimize_scalar(lambda x, c=c: law(np.exp(x), c / per_token(np.exp(x))),
                                     bounds=(10.0, 30.0), method="bounded", options={"xatol": 1e-9}).x)
              for c in budgets]
    return float(np.polyfit(np.log(budgets), np.log(optima), 1)[0])


@pytest.mark.parametrize("size_by", ["non-embedding", "total"])
def test_ladder_to_fit_recovers_the_law_in_the_ladders_terms(size_by, tmp_path):
    out = tmp_path / "ladder"
    assert _tool("ladder").main([
        "--base", str(TINY_RECIPE), "--set", "data.seq_length=72", "--out", str(out),
        "--n-min", "1e8", "--n-max", "2e11", "--head-dim", "128", "--aspect", "64", "--ffn-ratio", "2.75",
        "--ffn-multiple", "16", "--nodes", "1", "--gpus-per-node", "1", "--size-by", size_by,
        "--isoflop", *BUDGETS, "--tpp-range", "4", "100"]) == 0
    runs = json.loads((out / "ladder.json").read_text())["runs"]
    key = "non_embedding_params" if size_by == "non-embedding" else "params"
    assert all(r["size_by"] == size_by.replace("-", "_") for r in runs)
    # B puts the optimum near 20 tokens per parameter in the middle of the ladder.
    mid = float(np.exp(np.mean(np.log([r[key] for r in runs]))))
    b = ALPHA * A * (20 * mid) ** BETA / (BETA * mid ** ALPHA)
    law = _law(b)
    rng = np.random.default_rng(0)
    for run in runs:
        _write_run(run, run[key], law, rng)

    csv_path = out / "runs.csv"
    assert _tool("collect").main([r["run_dir"] for r in runs] + ["--out", str(csv_path)]) == 0
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["size_by"] for row in rows} == {size_by.replace("-", "_")}
    assert all(float(row["params"]) == float(row[f"{size_by.replace('-', '_')}_params"]) for row in rows)
    assert {row["budget"] for row in rows} == {f"C={float(c):g}" for c in BUDGETS}

    assert _tool("fit").main(["--runs", str(csv_path), "--out", str(out / "fit")]) == 0
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert fit["settings"]["size_by"] == size_by.replace("-", "_")
    truth = {"E": E, "alpha": ALPHA, "beta": BETA}
    for name, value in truth.items():
        low, high = fit["ci"][name]
        assert low <= value <= high, (name, fit[name], fit["ci"][name])
    approach2 = fit["approach2"]
    assert approach2["budget_source"] == "budget column" and approach2["num_used"] == len(BUDGETS)
    used = [b_["flops"] for b_ in approach2["budgets"] if b_["used"]]
    assert used == [float(c) for c in BUDGETS]  # C is the label's, not the achieved compute
    exponent = approach2["params_opt"]
    true = _true_exponent(runs, key, law, used)
    assert exponent["ci"][0] <= true <= exponent["ci"][1], (exponent, true)
