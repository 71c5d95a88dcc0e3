"""examples/ablations: the arms differ only in what their study varies, the shipped cluster recipes
are what --write-recipes writes, and the comparisons compute what they say."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "examples" / "ablations"))
sys.path.insert(0, str(REPO / "examples" / "quickstart"))
import ablation_compare as compare  # noqa: E402
import ablation_studies as studies  # noqa: E402
import run_quickstart as quickstart  # noqa: E402

from lumos_megatron.config import load_recipe, validate_config  # noqa: E402


def _flat(cfg) -> dict:
    return {f"{section}.{name}": value for section, values in dataclasses.asdict(cfg).items()
            for name, value in values.items()}


def test_shipped_cluster_files_are_what_write_recipes_writes(tmp_path):
    written = studies.write_cluster_files(tmp_path)
    shipped = sorted(p.name for p in studies.CLUSTER_RECIPES.iterdir())
    assert sorted(p.name for p in written) == shipped, "run: python examples/ablations/run.py --write-recipes"
    for path in written:
        assert path.read_text() == (studies.CLUSTER_RECIPES / path.name).read_text(), path.name


def test_cluster_arms_are_the_stage2_recipe_plus_their_overrides_at_one_budget():
    base = load_recipe(studies.CLUSTER_BASE)
    base.train.train_iters = studies.CLUSTER_ITERS
    official = _flat(base)
    for study, arms in studies.STUDIES.items():
        for arm in arms:
            cfg = load_recipe(studies.CLUSTER_RECIPES / studies.recipe_name(arm))
            validate_config(cfg)
            flat = _flat(cfg)
            changed = {k for k in flat if flat[k] != official[k]}
            assert changed == set(arm.overrides), (study, arm.name, changed)
            assert all(flat[k] == v for k, v in arm.overrides.items())
            assert cfg.train.train_iters == studies.CLUSTER_ITERS


def test_submit_scripts_name_existing_recipes_and_launchers():
    for study in studies.STUDY_NAMES:
        script = studies.CLUSTER_RECIPES / f"submit_{study.replace('-', '_')}.sh"
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        lines = [l for l in script.read_text().splitlines() if " sbatch " in l]
        assert len(lines) == (len(studies.RHO_INF) if study == "rho-inf" else len(studies.STUDIES[study]))
        for line in lines:
            words = line.split()
            launcher = next(w for w in words if w.startswith("examples/slurm/"))
            assert (REPO / launcher).is_file()
            recipe = [w.split("=", 1)[1] for w in words if w.startswith("RECIPE=")]
            assert all((REPO / r).is_file() for r in recipe)
    rho_lines = (studies.CLUSTER_RECIPES / "submit_rho_inf.sh").read_text()
    assert all(f"--history-mask-ratio {rho:g}\n" in rho_lines + "\n" for rho in studies.RHO_INF)


def test_cpu_arms_share_seed_data_and_budget_and_differ_only_in_their_overrides(tmp_path):
    recipes = {}
    for arms in studies.STUDIES.values():
        for arm in arms:
            s = studies.FULL
            base = quickstart.train_recipe(tmp_path / "data", tmp_path / arm.name, quickstart.FULL, s.train_iters,
                                           s.eval_interval, s.eval_iters)
            recipe = studies.cpu_recipe(arm, s, base)
            path = tmp_path / f"{arm.name}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            recipes[arm.name] = _flat(load_recipe(path))
    official = recipes["official"]
    for arms in studies.STUDIES.values():
        for arm in arms:
            changed = {k for k, v in recipes[arm.name].items() if v != official[k]
                       and not k.startswith(("checkpoint.", "logging."))}
            assert changed == set(arm.overrides), arm.name
    assert official["train.seed"] == 0 and official["train.eval_interval"] == studies.FULL.eval_interval


def test_validation_table_averages_the_last_evaluations_per_frame():
    series = {"a": {"loss/frame_0 validation": [(10, 3.0), (20, 2.0), (30, 1.0), (40, 0.0)],
                    "loss/frame_1 validation": [(10, 5.0), (20, 4.0), (30, 4.0), (40, 4.0)],
                    "lm loss validation": [(40, 2.5)], "loss/frame_0": [(1, 9.0)]}}
    table = compare.validation_table(series)
    assert table == {"a": {"frame_0": pytest.approx(1.0), "frame_1": pytest.approx(4.0), "all": 2.5,
                           "train_frame_0": 9.0}}
    with pytest.raises(ValueError, match="no per-frame validation loss"):
        compare.validation_table({"b": {"lm loss": [(1, 1.0)]}})


def test_a_seed_is_shared_by_the_arms_and_has_its_own_directory(tmp_path):
    base = quickstart.train_recipe(tmp_path / "data", tmp_path / "run", quickstart.FULL, 10, 5, 1)
    for arm in studies.STUDIES["mask"]:
        assert studies.cpu_recipe(arm, studies.FULL, base, seed=3)["train"]["seed"] == 3
    assert base["train"]["seed"] == 0  # the base recipe is not modified
    dirs = {studies.arm_directory(tmp_path, arm, seed) for arm in studies.STUDIES["rope"] for seed in range(3)}
    assert len(dirs) == 12 and studies.arm_directory(tmp_path, studies.OFFICIAL) == tmp_path / "arms" / "official"


def test_seed_statistics_pair_each_arm_with_the_official_arm_of_its_seed():
    # Seeds move both arms alike (+1, -1, +3); the random arm is 0.2 lower in every seed.
    tables = [{"official": {"frame_0": 4.0 + shift}, "random_mask": {"frame_0": 3.8 + shift}} for shift in (1, -1, 3)]
    stats = compare.seed_statistics(tables, "official")
    spread = np.std([5.0, 3.0, 7.0], ddof=1) / math.sqrt(3)
    assert stats["official"]["frame_0"]["mean"] == pytest.approx(5.0)
    assert stats["official"]["frame_0"]["sem"] == pytest.approx(spread)
    assert stats["official"]["frame_0"]["difference"] == 0.0
    assert stats["random_mask"]["frame_0"]["mean"] == pytest.approx(4.8)
    assert stats["random_mask"]["frame_0"]["difference"] == pytest.approx(-0.2)
    assert stats["random_mask"]["frame_0"]["difference_sem"] == pytest.approx(0.0, abs=1e-12)  # paired: exact
    one = compare.seed_statistics(tables[:1], "official")
    assert one["random_mask"]["frame_0"]["mean"] == pytest.approx(4.8) and math.isnan(one["random_mask"]["frame_0"]["sem"])
    with pytest.raises(ValueError, match="same arms"):
        compare.seed_statistics([tables[0], {"official": {"frame_0": 1.0}}], "official")


def test_mean_series_averages_the_steps_every_seed_logged():
    runs = [{"loss/frame_0": [(1, 2.0), (2, 4.0), (3, 6.0)], "only_here": [(1, 1.0)]},
            {"loss/frame_0": [(1, 4.0), (2, 8.0)]}]
    assert compare.mean_series(runs) == {"loss/frame_0": [(1, 3.0), (2, 6.0)]}
    assert compare.mean_series(runs[:1]) == {k: list(v) for k, v in runs[0].items()}


def test_seed_tables_mark_only_the_differences_the_seeds_agree_on():
    stats = compare.seed_statistics(
        [{"official": {"frame_0": 4.0 + d, "all": 5.0 + d}, "random_mask": {"frame_0": 3.5 + d, "all": 5.0 - d}}
         for d in (0.0, 0.1, 0.2)], "official")
    labels = {"official": "tube", "random_mask": "random"}
    md = compare.seed_tables(stats, labels, "official", 3)
    assert "| tube | 4.100 ± 0.058 | 5.100 ± 0.058 |" in md
    assert "| random | **-0.500 ± 0.000** | -0.200 ± 0.115 |" in md  # consistent gap bold, noisy one not
    single = compare.seed_tables(compare.seed_statistics([{"official": {"frame_0": 4.0, "all": 5.0}}], "official"),
                                 {"official": "tube"}, "official", 1)
    assert single.splitlines()[-1] == "| tube | 4.000 | 5.000 |" and "Paired" not in single


def test_leak_signal_is_the_growth_of_the_gap_beyond_frame_0():
    # Seed 1: the random arm is 0.1 lower on every frame (no leak); seed 2: 0.1 lower on frame 0,
    # 0.3 lower on frame 1 and 0.5 on frame 2 (a leak growing with k). Training loss: no gap at all.
    def row(base, gaps):
        return {**{f"frame_{k}": base + g for k, g in enumerate(gaps)},
                **{f"train_frame_{k}": 1.0 for k in range(3)}, "all": base}
    tables = [{"official": row(4.0, [0, 0, 0]), "random_mask": row(4.0, [-0.1, -0.1, -0.1])},
              {"official": row(5.0, [0, 0, 0]), "random_mask": row(5.0, [-0.1, -0.3, -0.5])}]
    signal = compare.leak_signal(tables, "random_mask", "official")
    assert set(signal) == {"frame_1", "frame_2", "train_frame_1", "train_frame_2"}
    assert signal["frame_1"]["mean"] == pytest.approx(-0.1) and signal["frame_2"]["mean"] == pytest.approx(-0.2)
    assert signal["frame_2"]["sem"] == pytest.approx(np.std([0.0, -0.4], ddof=1) / math.sqrt(2))
    assert signal["train_frame_2"] == {"mean": 0.0, "sem": 0.0}
    md = compare.leak_table(signal, "random")
    assert md.splitlines()[0] == ("| arm | val. frame 1 - frame 0 | val. frame 2 - frame 0 | train frame 1 - frame 0 "
                                  "| train frame 2 - frame 0 |")
    assert md.splitlines()[-1] == "| random | -0.100 ± 0.100 | -0.200 ± 0.200 | +0.000 ± 0.000 | +0.000 ± 0.000 |"


def test_rho_inf_metrics_per_frame(tmp_path):
    from lumos_megatron.tokenizers.video import FSQVideoAutoencoder, FSQVideoTokenizer, save_fsq_checkpoint
    from lumos_megatron.vocab import LumosVocab, build_video_sample

    torch.manual_seed(0)
    save_fsq_checkpoint(tmp_path / "fsq.pt", FSQVideoAutoencoder())
    tokenizer, vocab = FSQVideoTokenizer.from_checkpoint(tmp_path / "fsq.pt"), LumosVocab()
    out = tmp_path / "samples"
    out.mkdir()
    rng = np.random.default_rng(0)
    codes = [torch.from_numpy(rng.integers(0, 1000, (3, 4, 4))) for _ in range(2)]
    codes[1][2] = 7                                  # one latent frame that uses a single code
    sources = {}
    for index, c in enumerate(codes):
        tokens = build_video_sample([5, 6], c, 2, 4, vocab)[0].tolist()
        video = tokens[tokens.index(vocab.video_start): tokens.index(vocab.video_end) + 1]
        info = {"task": "i2v", "width": 32, "height": 32, "fps": 4, "video_tokens": video}
        (out / f"sample_{index:05d}.json").write_text(json.dumps(info))
        frames = tokenizer.decode(c).numpy()
        sources[f"sample_{index:05d}"] = np.clip(frames.astype(int) + 3 * (index + 1), 0, 255).astype(np.uint8)
        decoded = frames
    metrics = compare.rho_inf_metrics(out, tokenizer, sources)
    assert compare.rho_inf_metrics(out, tokenizer)["psnr_per_frame"] == []
    assert metrics["samples"] == 2 and len(metrics["psnr_per_frame"]) == len(decoded) == 9
    for t in (0, 8):
        expected = [10 * math.log10(255 ** 2 / np.mean((tokenizer.decode(c).numpy()[t].astype(float)
                                                         - sources[f"sample_{i:05d}"][t]) ** 2))
                    for i, c in enumerate(codes)]
        assert metrics["psnr_per_frame"][t] == pytest.approx(np.mean(expected))
    flicker = np.mean([(255 - np.abs(np.diff(tokenizer.decode(c).numpy().astype(float), axis=0))
                        .mean(axis=(1, 2, 3))) / 255 for c in codes], axis=0)
    assert metrics["flicker_per_pair"] == pytest.approx(flicker.tolist())
    pooled = np.concatenate([codes[0][2].reshape(-1).numpy(), np.full(16, 7)])
    counts = np.bincount(pooled, minlength=1000)
    p = counts[counts > 0] / counts.sum()
    assert metrics["code_perplexity_per_latent_frame"][2] == pytest.approx(2 ** float(-(p * np.log2(p)).sum()))


def test_moving_average_is_a_trailing_mean():
    assert compare.moving_average([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
