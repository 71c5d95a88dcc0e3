"""Scaling ladders: the shape family, the DeepSeek LLM batch/LR rule, the derived recipes (they
load and validate), the manifest, the dry-run table, and the sbatch commands, which must pass the
same launcher checks as the shipped launchers (tests/unit/test_recipes_and_launchers.py)."""

from __future__ import annotations

import json
import math
import shlex
import subprocess
from pathlib import Path

import pytest

from lumos_megatron.config import load_recipe, parse_cli, validate_config
from lumos_megatron.platform.parallel import resolve_layout
from lumos_megatron.scaling.ladder.hparam_rule import (
    HParamRule,
    batch_samples,
    optimal_batch_tokens,
    optimal_lr,
    run_hparams,
)
from lumos_megatron.scaling.ladder.shapes import ShapeRule, kv_groups, ladder_shapes, shape_for_width
from lumos_megatron.training.flops import flops_per_token
from lumos_megatron.models.parameter_counts import parameter_counts
from lumos_megatron.cli import ladder as ladder_cli

from conftest import REPO, TINY_RECIPE
from test_recipes_and_launchers import BASH, SCRIPTS, _dry_env, _known_flag, _sbatch_directives

BASE_1B = REPO / "examples" / "recipes" / "lumos_1b_stage1-image-256p_8gpu_h100_bf16.yaml"
TINY_ARGS = ["--base", str(TINY_RECIPE), "--n-min", "1e4", "--n-max", "3e5", "--head-dim", "32",
             "--aspect", "48", "--ffn-ratio", "2.75", "--ffn-multiple", "16", "--gpus-per-node", "1",
             "--set", "data.seq_length=72"]
GPU_ARGS = ["--base", str(BASE_1B), "--n-min", "2e7", "--n-max", "1.2e9", "--num-sizes", "3",
            "--frames", "1", "--grid", "44", "44", "--text-tokens", "200"]


def _tool():
    return ladder_cli.main


def test_default_family_reproduces_the_1b_recipe_shape():
    base = load_recipe(BASE_1B)
    shape = shape_for_width(2048, ShapeRule(), base.model)
    m = base.model
    assert (shape.depth, shape.heads, shape.groups, shape.ffn) == (
        m.num_layers, m.num_attention_heads, m.num_query_groups, m.ffn_hidden_size)
    assert shape.total_params == parameter_counts(m).total
    assert shape.non_embedding_params == parameter_counts(m).non_embedding


def test_gqa_groups_divide_the_heads():
    assert [kv_groups(h, 4) for h in (1, 2, 3, 4, 8, 24, 32)] == [1, 1, 1, 1, 2, 6, 8]
    with pytest.raises(ValueError, match="multiple of 32"):
        ShapeRule(head_dim=48).check()


def test_ladder_sizes_are_log_spaced_members_of_the_range():
    base = load_recipe(BASE_1B).model
    every = ladder_shapes(ShapeRule(), base, 1e7, 1e9)
    assert all(1e7 <= s.non_embedding_params <= 1e9 for s in every)
    assert [s.width for s in every] == sorted(s.width for s in every)
    picked = ladder_shapes(ShapeRule(), base, 1e7, 1e9, num_sizes=4)
    assert len(picked) == 4 and picked[0] == every[0] and picked[-1] == every[-1]
    logs = [math.log(s.non_embedding_params) for s in picked]
    gaps = [b - a for a, b in zip(logs, logs[1:])]
    assert max(gaps) < 2 * min(gaps)
    by_total = ladder_shapes(ShapeRule(), base, 1e8, 1e9, size_by="total")
    assert all(1e8 <= s.total_params <= 1e9 for s in by_total)
    with pytest.raises(ValueError, match="no non-embedding size"):
        ladder_shapes(ShapeRule(), base, 1.0, 2.0)


def test_hparam_rule_is_deepseek_llm_eq_1():
    for c in (1e17, 1e20, 3e23):
        assert optimal_batch_tokens(c) == pytest.approx(0.2920 * c ** 0.3271)
        assert optimal_lr(c) == pytest.approx(0.3118 * c ** -0.1250)
    # DeepSeek LLM 7B (C ~ 1e23) trained with 2304 x 4096 = 9.4M-token batches at LR 4.2e-4.
    assert 8e6 < optimal_batch_tokens(1e23) < 11e6 and 3.8e-4 < optimal_lr(1e23) < 4.6e-4
    assert batch_samples(4096 * 100, 4096, 2, 8) == (96, 2)  # multiple of micro x DP = 16
    assert batch_samples(4096 * 5, 4096, 2, 8) == (8, 1)  # below one step of micro 2: micro 1
    hp = run_hparams(1e9, 1e11, 4096, 2, 8, HParamRule(), iters_multiple=7)
    assert hp.train_iters % 7 == 0 and hp.min_lr == pytest.approx(0.1 * hp.lr)
    assert hp.warmup_iters == min(2000, math.ceil(0.05 * hp.train_iters))
    assert abs(hp.tokens(4096) - 1e11) / 1e11 < 0.05


def test_ladder_recipes_validate_and_the_manifest_adds_up(tmp_path, capsys):
    out = tmp_path / "ladder"
    assert _tool()([*TINY_ARGS, "--out", str(out), "--tokens-per-param", "1", "4", "--eval-samples", "16"]) == 0
    data = json.loads((out / "ladder.json").read_text())
    assert data["size_by"] == "non_embedding" and "DeepSeek LLM" in data["hparam_rule"]["name"]
    assert len(data["runs"]) == 6
    for run in data["runs"]:
        recipe = Path(run["recipe"])
        assert recipe.parent == out.resolve() / run["name"] and recipe.is_file()
        cfg = load_recipe(recipe)
        validate_config(cfg)
        assert parse_cli(["--config", str(recipe)]) == cfg
        resolve_layout(cfg, 1)
        t = cfg.train
        assert cfg.data.seq_length == 72 and run["tokens"] == t.train_iters * t.global_batch_size * 72
        assert t.train_iters % t.eval_interval == 0 and t.min_lr < t.lr
        assert 16 <= t.eval_iters * t.global_batch_size < 16 + t.global_batch_size  # same samples per run
        counts = parameter_counts(cfg.model)
        assert (run["params"], run["non_embedding_params"]) == (counts.total, counts.non_embedding)
        assert run["flops"] == pytest.approx(flops_per_token(cfg).total * run["tokens"])
        assert run["flops_6nd"] == pytest.approx(6 * counts.non_embedding * run["tokens"])
        assert json.loads((recipe.parent / "ladder_run.json").read_text()) == run
        assert run["local_command"][-2:] == ["--tensorboard-dir", str(recipe.parent / "tensorboard")]
    assert {r["budget"] for r in data["runs"]} == {"tpp=1", "tpp=4"}
    assert "| run |" in capsys.readouterr().out


def test_isoflop_budgets_give_equal_compute_per_budget(tmp_path):
    out = tmp_path / "iso"
    assert _tool()([*GPU_ARGS, "--out", str(out), "--isoflop", "1e19", "1e20"]) == 0
    runs = json.loads((out / "ladder.json").read_text())["runs"]
    for budget in ("C=1e+19", "C=1e+20"):
        flops = [r["flops"] for r in runs if r["budget"] == budget]
        assert len(flops) >= 2 and all(f == pytest.approx(float(budget[2:]), rel=0.02) for f in flops)
    for run in runs:
        validate_config(load_recipe(run["recipe"]))
        resolve_layout(load_recipe(run["recipe"]), 8)


def test_dry_run_prints_the_estimate_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert _tool()([*GPU_ARGS, "--out", str(out), "--tokens-per-param", "20", "--gpu", "a100",
                    "--mfu", "0.4", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "run |" not in line]
    assert len(rows) == 3 and "A100 GPU-h" in text and "at 40% MFU (312 TFLOP/s" in text


@pytest.mark.parametrize("args, message", [
    (["--gpu", "tpu"], "unknown GPU"),
    (["--n-min", "1", "--n-max", "2"], "no non-embedding size"),
    (["--set", "model.nope=1"], "unknown config key"),
    (["--mfu", "2"], "MFU"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert _tool()([*GPU_ARGS, "--out", str(tmp_path / "x"), "--tokens-per-param", "20", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    real_data = ["--base", str(BASE_1B), "--n-min", "2e7", "--n-max", "1.2e9"]  # no sample layout
    assert _tool()([*real_data, "--out", str(tmp_path / "x"), "--tokens-per-param", "20"]) == 2
    assert "reads real data" in capsys.readouterr().err


def _split_command(command: str):
    """(environment assignments, sbatch options, launcher script, script arguments)."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words.pop(0) == "sbatch"
    options = []
    while words[0].startswith("--"):
        options.append(words.pop(0))
    return env, options, words[0], words[1:]


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_generated_sbatch_commands_pass_the_launcher_lint(tmp_path, launcher):
    out = tmp_path / "ladder"
    assert _tool()([*GPU_ARGS, "--out", str(out), "--tokens-per-param", "20", "--launcher", launcher]) == 0
    runs = json.loads((out / "ladder.json").read_text())["runs"]
    assert (out / "submit.sh").read_text().count("sbatch ") == len(runs)
    assert subprocess.run([BASH, "-n", str(out / "submit.sh")], check=False).returncode == 0
    for k, run in enumerate(runs[:2]):
        env, options, script, script_args = _split_command(run["sbatch"])
        assert REPO / script in SCRIPTS and launcher in script
        assert {o.split("=")[0] for o in options} <= {"--job-name", "--nodes", "--gpus-per-node",
                                                       "--ntasks-per-node", "--time"}
        assert f"--job-name={run['name']}" in options
        # Tasks per node (command line over the script's directive) agree with the launch style.
        given = dict(o.split("=", 1) for o in options)
        directives = _sbatch_directives(REPO / script)
        tasks = int(given.get("--ntasks-per-node", directives["--ntasks-per-node"]))
        gpus = int(given.get("--gpus-per-node", directives["--gpus-per-node"]))
        assert tasks == (1 if launcher == "torchrun" else gpus) and int(env["GPUS_PER_NODE"]) == gpus
        assert all(_known_flag(a) for a in script_args if a.startswith("--"))
        parse_cli(["--config", env["RECIPE"]])  # the launchers' recipe check
        # Dry run of the real launcher with fake srun/torchrun/scontrol/squeue (as the launcher tests).
        work = tmp_path / f"dry{k}"
        work.mkdir()
        dry = _dry_env(work, **env)
        res = subprocess.run([BASH, str(REPO / script), *script_args], cwd=work, env=dry,
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        trainer = json.loads((Path(dry["FAKE_OUT"]) / "worker0.json").read_text())["args"]
        assert trainer[:2] == ["--config", run["recipe"]]
        assert trainer[trainer.index("--tensorboard-dir") + 1] == str(Path(run["run_dir"]) / "tensorboard")
        assert all(_known_flag(a) for a in trainer if a.startswith("--"))
        cfg = parse_cli(trainer)  # the exact command line the workers get
        assert cfg.model.hidden_size == run["shape"]["width"]


def test_tokens_count_the_padded_length_the_trainer_uses(tmp_path):
    out = tmp_path / "padded"
    args = [*TINY_ARGS, "--set", "data.seq_length=128", "--set", "data.pad_to_multiple=8", "--num-sizes", "1"]
    assert _tool()([*args, "--out", str(out), "--tokens-per-param", "2"]) == 0
    (run,) = json.loads((out / "ladder.json").read_text())["runs"]
    # A 71-token mock sample is padded to 72, not to data.seq_length = 128.
    assert run["tokens"] == run["train_iters"] * run["global_batch_size"] * 72


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_submit_script_runs_the_checkouts_launchers_from_any_directory(tmp_path, monkeypatch):
    """submit.sh changes to the checkout it was written for, so it works from anywhere; REPO_DIR wins."""
    out, bin_dir, elsewhere, checkout = (tmp_path / d for d in ("ladder", "bin", "elsewhere", "checkout"))
    for d in (bin_dir, elsewhere, checkout / "examples" / "slurm"):
        d.mkdir(parents=True)
    (checkout / "examples" / "slurm" / "_lib.sh").write_text("")
    record = tmp_path / "sbatch_calls.txt"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/bash\necho "$PWD ${{@: -1}}" >> {shlex.quote(str(record))}\n')
    fake.chmod(0o755)
    monkeypatch.chdir(elsewhere)
    # Default: the checkout holding the installed package (this repository).
    assert _tool()([*GPU_ARGS, "--out", str(out), "--tokens-per-param", "20"]) == 0
    assert f"REPO_DIR=${{REPO_DIR:-{REPO}}}" in (out / "submit.sh").read_text()
    assert _tool()([*GPU_ARGS, "--out", str(out), "--tokens-per-param", "20", "--repo-dir", str(checkout)]) == 0
    runs = json.loads((out / "ladder.json").read_text())["runs"]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run([BASH, str(out / "submit.sh")], cwd=elsewhere, env=env, check=True)
    calls = [line.split() for line in record.read_text().splitlines()]
    assert len(calls) == len(runs) and (checkout / "logs").is_dir()
    assert all(Path(cwd) == checkout and (REPO / script).is_file() for cwd, script in calls)
    # A checkout named in the environment wins; a --repo-dir that is no checkout is one line, exit 2.
    record.unlink()
    subprocess.run([BASH, str(out / "submit.sh")], cwd=elsewhere, env={**env, "REPO_DIR": str(elsewhere)},
                   check=True)
    assert {Path(line.split()[0]) for line in record.read_text().splitlines()} == {elsewhere}
    assert _tool()([*GPU_ARGS, "--out", str(out), "--tokens-per-param", "20", "--repo-dir", str(elsewhere)]) == 2


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_submit_script_without_a_checkout_asks_for_repo_dir(tmp_path):
    from lumos_megatron.scaling.ladder.launch import submit_script

    script = tmp_path / "submit.sh"
    script.write_text(submit_script(["sbatch examples/slurm/train_torchrun.sbatch"], None))
    proc = subprocess.run([BASH, str(script)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "set REPO_DIR to a lumos_megatron checkout" in proc.stderr
