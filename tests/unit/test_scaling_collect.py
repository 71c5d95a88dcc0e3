"""lumos-collect (tools/scaling/collect.py) on synthetic run directories (TensorBoard events written as the
trainer writes them): validation loss and its fallback, tokens, supervised tokens, FLOPs, the
run-configuration search order, resumed runs, per-evaluation rows, and bad runs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from lumos_megatron.config import dump_config, load_recipe
from lumos_megatron.training.flops import flops_per_token
from lumos_megatron.models.parameter_counts import parameter_counts
from lumos_megatron.scaling.ladder.collect import COLUMNS, RunCollectError, collect_run
from lumos_megatron.cli import collect as collect_cli

from conftest import TINY_RECIPE

SEQ, GBS = 96, 8  # tiny_cpu.yaml


def _write_events(tb: Path, steps, validation=(), loss=lambda i: 5.0 - 0.1 * i, tokens_tags=True,
                  loss_tokens=lambda i: 100 + i):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tb))
    for i in steps:
        w.add_scalar("lm loss", loss(i), i)
        w.add_scalar("lm loss vs samples", loss(i), i * GBS)
        if tokens_tags:
            w.add_scalar("tokens", GBS * SEQ, i)
            w.add_scalar("loss-tokens", loss_tokens(i), i)
        if i in dict(validation):
            w.add_scalar("lm loss validation", dict(validation)[i], i)
    w.close()


def _run_dir(tmp_path: Path, name="run", **events) -> Path:
    run = tmp_path / name
    run.mkdir()
    shutil.copy(TINY_RECIPE, run / "recipe.yaml")
    _write_events(run / "tensorboard", **events)
    return run


def test_final_and_smoothed_validation_loss_tokens_and_flops(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 11), validation=[(4, 3.0), (8, 2.0), (10, 1.5)])
    (row,) = collect_run(run, smooth_last=2)
    cfg = load_recipe(TINY_RECIPE)
    counts = parameter_counts(cfg.model)
    assert row["name"] == "run" and row["loss_source"] == "validation"
    assert row["loss"] == row["loss_final"] == 1.5 and row["loss_smoothed"] == pytest.approx(1.75)
    assert row["tokens"] == 10 * GBS * SEQ and row["supervised_tokens"] == sum(100 + i for i in range(1, 11))
    assert row["params"] == counts.total and row["non_embedding_params"] == counts.non_embedding
    assert row["flops"] == pytest.approx(flops_per_token(cfg).total * 10 * GBS * SEQ)
    assert (row["iteration"], row["evaluations"]) == (10, 3)
    assert collect_run(run, loss="smoothed", smooth_last=2)[0]["loss"] == pytest.approx(1.75)


def test_per_eval_rows_count_tokens_up_to_each_evaluation(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 11), validation=[(4, 3.0), (8, 2.0), (10, 1.5)])
    rows = collect_run(run, per_eval=True)
    assert [r["name"] for r in rows] == ["run@4", "run@8", "run@10"]
    assert [r["tokens"] for r in rows] == [4 * GBS * SEQ, 8 * GBS * SEQ, 10 * GBS * SEQ]
    assert [r["loss"] for r in rows] == [3.0, 2.0, 1.5]
    assert rows[0]["flops"] < rows[1]["flops"] < rows[2]["flops"]


def test_training_loss_is_the_marked_fallback_and_old_runs_use_consumed_samples(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 41), tokens_tags=False)
    (row,) = collect_run(run, smooth_last=4)
    assert row["loss_source"] == "train" and row["loss"] == pytest.approx(5.0 - 4.0)
    assert row["loss_smoothed"] == pytest.approx(sum(5.0 - 0.1 * i for i in range(37, 41)) / 4)
    assert row["tokens"] == 40 * GBS * SEQ and row["supervised_tokens"] == ""


def test_resumed_runs_keep_the_last_value_of_a_repeated_step(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 7), loss=lambda i: 9.0)
    # The resumed job (from a checkpoint at 4) writes a new event file repeating steps 5 and 6.
    _write_events(run / "tensorboard", steps=range(5, 11), validation=[(10, 2.5)], loss=lambda i: 1.0)
    (row,) = collect_run(run)
    assert row["tokens"] == 10 * GBS * SEQ and row["loss"] == 2.5
    assert row["supervised_tokens"] == sum(100 + i for i in range(1, 11))


def test_checkpoint_run_config_comes_first(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 3))
    cfg = load_recipe(TINY_RECIPE)
    cfg.model.num_layers = 3
    iter_dir = run / "checkpoints" / "iter_0000002"
    iter_dir.mkdir(parents=True)
    (iter_dir / "run_config.yaml").write_text(dump_config(cfg))
    (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2\n")
    assert collect_run(run)[0]["total_params"] == parameter_counts(cfg.model).total


def test_unusable_runs(tmp_path):
    with pytest.raises(RunCollectError, match="no such run directory"):
        collect_run(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunCollectError, match="no run configuration"):
        collect_run(empty)
    shutil.copy(TINY_RECIPE, empty / "recipe.yaml")
    with pytest.raises(RunCollectError, match="no TensorBoard event files"):
        collect_run(empty)
    nan = _run_dir(tmp_path, name="nan", steps=range(1, 3), loss=lambda i: float("nan"))
    with pytest.raises(RunCollectError, match="no finite"):
        collect_run(nan)


def _tool():
    return collect_cli.main


def test_cli_skips_bad_runs_and_exits_2_without_rows(tmp_path, capsys):
    good = _run_dir(tmp_path, steps=range(1, 5), validation=[(4, 2.0)])
    out = tmp_path / "runs.csv"
    assert _tool()([str(good), str(tmp_path / "missing"), "--out", str(out)]) == 0
    assert "skipping" in capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and tuple(rows[0]) == COLUMNS
    assert {"name", "params", "non_embedding_params", "tokens", "loss", "loss_source", "flops"} <= set(rows[0])
    assert _tool()([str(tmp_path / "missing"), "--out", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err.strip().endswith("no usable run")
    assert not (tmp_path / "none.csv").exists()


def _ladder_entry(run: Path, size_by="non_embedding", budget="C=1e+12", train_iters=10) -> None:
    (run / "ladder_run.json").write_text(json.dumps({"size_by": size_by, "budget": budget,
                                                     "train_iters": train_iters}))


def test_the_ladders_size_measure_and_budget_travel_into_the_rows(tmp_path):
    run = _run_dir(tmp_path, steps=range(1, 11), validation=[(5, 3.0), (10, 2.0)])
    _ladder_entry(run)
    counts = parameter_counts(load_recipe(TINY_RECIPE).model)
    rows = collect_run(run, per_eval=True)
    assert [r["size_by"] for r in rows] == ["non_embedding"] * 2
    assert [r["params"] for r in rows] == [counts.non_embedding] * 2
    # Only the run's last evaluation, at its planned end, is at the budget's compute.
    assert [r["budget"] for r in rows] == ["", "C=1e+12"] and rows[-1]["train_iters"] == 10
    (total,) = collect_run(run, size_by="total")
    assert (total["params"], total["size_by"], total["budget"]) == (counts.total, "total", "C=1e+12")
    plain = _run_dir(tmp_path, name="plain", steps=range(1, 3), validation=[(2, 2.0)])
    (row,) = collect_run(plain)  # no ladder: total parameters, no budget
    assert (row["params"], row["size_by"], row["budget"]) == (counts.total, "total", "")


def test_a_run_that_stopped_early_has_no_budget_and_a_warning(tmp_path, capsys):
    run = _run_dir(tmp_path, steps=range(1, 7), validation=[(5, 3.0)])
    _ladder_entry(run, train_iters=10)
    out = tmp_path / "runs.csv"
    assert _tool()([str(run), "--out", str(out)]) == 0
    assert "stopped at iteration 5 of 10" in capsys.readouterr().err
    (row,) = list(csv.DictReader(out.open()))
    assert row["budget"] == "" and row["size_by"] == "non_embedding"
