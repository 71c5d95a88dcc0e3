"""The CPU mini scaling ladder end to end (examples/scaling/run_mini_ladder.py --isoflop --smallest):
make_ladder (two compute budgets) → 6 local training runs with periodic evaluation → collect → fit
→ report. Checks the path (rows, columns, budgets, files), not the fitted numbers: tiny runs on
mock classes carry no scaling law. The tokens-per-parameter setting is checked by laying it out."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

from lumos_megatron.config import load_recipe

from conftest import REPO


def test_mini_ladder_isoflop_smallest_end_to_end(tmp_path):
    out = tmp_path / "mini"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "examples/scaling/run_mini_ladder.py", "--isoflop", "--smallest",
                           "--out", str(out), "--bootstrap", "20"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mini ladder done" in proc.stdout

    ladder = json.loads((out / "ladder.json").read_text())
    names = [r["name"] for r in ladder["runs"]]
    assert {load_recipe(r["recipe"]).data.mock_classes for r in ladder["runs"]} == {32}
    assert len(names) == 6 and {r["budget"] for r in ladder["runs"]} == {"C=1e+10", "C=3e+10"}

    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted(names)
    for row, run in zip(sorted(rows, key=lambda r: r["name"]), sorted(ladder["runs"], key=lambda r: r["name"])):
        assert row["loss_source"] == "validation"
        assert int(row["tokens"]) == run["tokens"] and int(row["iteration"]) == run["train_iters"]
        assert int(row["params"]) == int(row["non_embedding_params"]) == run["non_embedding_params"]
        assert row["size_by"] == "non_embedding" and row["budget"] == run["budget"]
        assert abs(float(row["flops"]) / run["flops"] - 1) < 1e-9
        assert 0 < float(row["loss"]) < 20 and int(row["supervised_tokens"]) > 0
        assert int(row["evaluations"]) == 2

    fit = json.loads((out / "fit" / "fit.json").read_text())
    for key in ("E", "A", "B", "alpha", "beta", "ci", "settings", "plots"):
        assert key in fit, key
    assert fit["settings"]["num_points"] == 6
    assert (fit["settings"]["params_column"], fit["settings"]["size_by"]) == ("params", "non_embedding")
    approach2 = fit["approach2"]
    assert approach2["budget_source"] == "budget column"
    assert [b["flops"] for b in approach2["budgets"]] == [1e10, 3e10]
    assert (out / "fit" / "report.md").stat().st_size > 0
    for plot in fit["plots"].values():
        assert (out / "fit" / plot).stat().st_size > 0, plot


def test_mini_ladder_tokens_per_parameter_setting_lays_out(tmp_path):
    spec = importlib.util.spec_from_file_location("mini", REPO / "examples" / "scaling" / "run_mini_ladder.py")
    mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mini)
    for size in ("default", "smallest"):
        proc = subprocess.run([sys.executable, "tools/scaling/make_ladder.py", "--out", str(tmp_path / size),
                               *mini.COMMON, *mini.SETTINGS[size], "--dry-run"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert ("9 runs" if size == "default" else "6 runs") in proc.stdout
