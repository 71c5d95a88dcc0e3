"""What the ablations compare: per-frame validation loss per arm, and per-frame sample quality per ρ_inf.

* ``validation_table`` / ``plot_validation``: the objective's per-latent-frame validation loss
  (TensorBoard ``loss/frame_k validation``) and training loss (``loss/frame_k``) of every arm:
  the means of the last evaluations and iterations in a table, the curves in one column per
  latent frame. Each arm is scored under its own masking, as the paper's comparison is.
* ``seed_statistics`` / ``mean_series``: with several seeds (each seed shared by every arm: one
  initialization, data order and set of mask keys), the mean of each column over the seeds with
  its standard error, and each arm's paired difference from the official arm, seed by seed;
  ``leak_signal``: for the mask study, how that difference grows from frame 0 to later frames.
* ``rho_inf_metrics`` / ``plot_rho_inf``: for each ρ_inf, per frame and averaged over the samples,
  the offline metrics of ``lumos_megatron.evaluation_metrics``: PSNR of each RGB frame against
  the source clip (I2V), VBench's temporal-flicker term of each consecutive pair
  ``(255 - MAE(f_t, f_t+1)) / 255``, and the perplexity of each latent frame's codes pooled over
  the samples (the effective number of codes in use).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lumos_megatron.markdown_table import markdown_table

FRAME_TAG = re.compile(r"^loss/frame_(\d+)( validation)?$")
LAST_EVALS = 3
"""The validation columns average this many last evaluations (a tiny validation set is noisy)."""
TRAIN_TAIL = 0.1
"""The training columns average this last fraction of the iterations."""


def frame_series(series: Dict[str, List[tuple]], validation: bool = True) -> Dict[int, List[tuple]]:
    """latent frame k -> its validation-loss series (``validation=False``: its training loss)."""
    out = {}
    for tag, values in series.items():
        m = FRAME_TAG.match(tag)
        if m and bool(m.group(2)) == validation:
            out[int(m.group(1))] = values
    return out


def validation_table(arms: Dict[str, Dict[str, List[tuple]]]) -> Dict[str, Dict[str, float]]:
    """arm -> {"frame_k": mean of its last ``LAST_EVALS`` validation losses, ..., "all": lm loss,
    "train_frame_k": mean training loss of the last ``TRAIN_TAIL`` of the iterations, ...}."""
    table = {}
    for arm, series in arms.items():
        frames = frame_series(series)
        if not frames:
            raise ValueError(f"arm {arm} logged no per-frame validation loss (loss/frame_k validation)")
        row = {f"frame_{k}": float(np.mean([v for _, v in frames[k][-LAST_EVALS:]])) for k in sorted(frames)}
        overall = series.get("lm loss validation", [])
        row["all"] = float(np.mean([v for _, v in overall[-LAST_EVALS:]])) if overall else math.nan
        for k, values in sorted(frame_series(series, validation=False).items()):
            tail = max(1, int(len(values) * TRAIN_TAIL))
            row[f"train_frame_{k}"] = float(np.mean([v for _, v in values[-tail:]]))
        table[arm] = row
    return table


def mean_and_sem(values: Sequence[float]) -> Tuple[float, float]:
    """The mean of per-seed ``values`` and its standard error (NaN with one seed)."""
    values = np.asarray(values, dtype=np.float64)
    sem = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(values.mean()), sem


def seed_statistics(tables: Sequence[Dict[str, Dict[str, float]]], reference: str
                    ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``validation_table`` results, one per seed (the same arms and columns in each) -> arm ->
    column -> ``{"mean", "sem", "difference", "difference_sem"}``: the mean over the seeds and its
    standard error, and the mean of the paired differences ``arm - reference`` (same seed) with
    theirs. A paired difference cancels what a seed does to every arm alike (initialization, data
    order, the validation masks). Standard errors are NaN with one seed."""
    if not tables:
        raise ValueError("no seeds to summarise")
    arms = list(tables[0])
    if reference not in arms or any(list(t) != arms for t in tables):
        raise ValueError(f"every seed needs the same arms, {reference!r} among them; got {[list(t) for t in tables]}")

    out = {}
    for arm in arms:
        out[arm] = {}
        for column in tables[0][arm]:
            mean, sem = mean_and_sem([t[arm][column] for t in tables])
            difference, difference_sem = mean_and_sem([t[arm][column] - t[reference][column] for t in tables])
            out[arm][column] = {"mean": mean, "sem": sem, "difference": difference, "difference_sem": difference_sem}
    return out


def leak_signal(tables: Sequence[Dict[str, Dict[str, float]]], arm: str, reference: str
                ) -> Dict[str, Dict[str, float]]:
    """What leakage across frames predicts, seed by seed: how much ``arm``'s gap to ``reference``
    on latent frame k >= 1 differs from its gap on frame 0 (which has no earlier frame to copy
    from), ``(arm_k - ref_k) - (arm_0 - ref_0)``, for validation (``frame_k``) and training
    (``train_frame_k``) loss: ``{"frame_k": {"mean", "sem"}, ...}``. A leak makes it negative
    and growing with k; a difference that the arms show on every frame alike cancels."""
    out = {}
    for prefix in ("frame_", "train_frame_"):
        frames = sorted(int(k[len(prefix):]) for k in tables[0][reference] if k.startswith(prefix))
        for k in frames[1:]:
            mean, sem = mean_and_sem([(t[arm][f"{prefix}{k}"] - t[reference][f"{prefix}{k}"])
                                      - (t[arm][f"{prefix}0"] - t[reference][f"{prefix}0"]) for t in tables])
            out[f"{prefix}{k}"] = {"mean": mean, "sem": sem}
    return out


def _column_label(column: str) -> str:
    # frame_k -> "val. frame k", train_frame_k -> "train frame k", all -> "val. all"
    kind = "train" if column.startswith("train_") else "val."
    return f"{kind} {column[len('train_'):] if kind == 'train' else column}".replace("_", " ")


def leak_table(signal: Dict[str, Dict[str, float]], label: str) -> str:
    """``leak_signal`` as one markdown row (bold where larger than twice its standard error)."""
    header = ["arm", *(f"{_column_label(k)} - frame 0" for k in signal)]
    return markdown_table(header, [[label, *(_estimate(v["mean"], v["sem"], True) for v in signal.values())]])


def _estimate(mean: float, sem: float, signed: bool = False) -> str:
    # A paired difference larger than twice its standard error is marked: the seeds agree on it.
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    if math.isnan(sem):
        return text
    text += f" ± {sem:.3f}"
    return f"**{text}**" if signed and abs(mean) > 2 * sem else text


def seed_tables(stats: Dict[str, Dict[str, Dict[str, float]]], labels: Dict[str, str], reference: str,
                seeds: int) -> str:
    """``seed_statistics`` as markdown: per arm, each column's value (one seed) or mean ± standard
    error (several); with several seeds also each other arm's paired difference from
    ``reference``, in bold where it exceeds twice its standard error."""
    columns = list(next(iter(stats.values())))
    frames = [k for k in columns if k.startswith("frame_")]
    train = [k for k in columns if k.startswith("train_frame_")]
    ordered = [*frames, "all", *train]
    header = ["arm", *map(_column_label, ordered)]
    rows = [[labels[name], *(_estimate(row[k]["mean"], row[k]["sem"]) for k in ordered)] for name, row in stats.items()]
    md = markdown_table(header, rows)
    if seeds > 1:
        others = [name for name in stats if name != reference]
        rows = [[labels[name], *(_estimate(stats[name][k]["difference"], stats[name][k]["difference_sem"], True)
                                 for k in ordered)] for name in others]
        md = (f"Mean ± standard error over {seeds} seeds:\n\n{md}\n\nEach arm minus {labels[reference]} "
              f"of the same seed, mean ± standard error; bold where larger than twice its standard error:\n\n"
              + markdown_table(header, rows))
    return md


def mean_series(runs: Sequence[Dict[str, List[tuple]]]) -> Dict[str, List[tuple]]:
    """Several seeds' TensorBoard series of one arm -> tag -> ``(step, mean over the seeds)`` at
    the steps every seed logged."""
    out = {}
    for tag in set.intersection(*(set(run) for run in runs)):
        by_step = [dict(run[tag]) for run in runs]
        steps = sorted(set.intersection(*(set(values) for values in by_step)))
        out[tag] = [(step, float(np.mean([values[step] for values in by_step]))) for step in steps]
    return out


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (a short start uses what it has)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(0, index - window)
    return (cumulative[index] - cumulative[start]) / (index - start)


def plot_validation(arms: Dict[str, Dict[str, List[tuple]]], labels: Dict[str, str], title: str, path: Path,
                    window: int = 25) -> None:
    """One column per latent frame: training loss (moving average over ``window`` iterations, top)
    and validation loss (bottom) against iteration, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = sorted({k for series in arms.values() for k in frame_series(series)})
    fig, axes = plt.subplots(2, len(frames), figsize=(3.6 * len(frames), 5.6), sharey="row", squeeze=False)
    for column, k in enumerate(frames):
        for arm, series in arms.items():
            train = frame_series(series, validation=False).get(k)
            if train:
                steps, losses = zip(*train)
                axes[0][column].plot(steps, moving_average(losses, window), linewidth=1, label=labels.get(arm, arm))
            values = frame_series(series).get(k)
            if values:
                steps, losses = zip(*values)
                axes[1][column].plot(steps, losses, "o-", markersize=3, linewidth=1, label=labels.get(arm, arm))
        axes[0][column].set_title(f"latent frame {k}")
        axes[1][column].set_xlabel("iteration")
    axes[0][0].set_ylabel(f"training loss\n(mean of {window} iterations)")
    axes[1][0].set_ylabel("validation loss")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pooled_perplexity(codes: Sequence[np.ndarray], codebook_size: int) -> float:
    from lumos_megatron.evaluation_metrics import codebook_usage

    return codebook_usage(np.concatenate([c.reshape(-1) for c in codes]), codebook_size).perplexity


def rho_inf_metrics(directory: Path, tokenizer, sources: Optional[Dict[str, np.ndarray]] = None
                    ) -> Dict[str, object]:
    """Per-frame metrics of one generated directory (one ρ_inf); ``sources``: sample name -> the
    uint8 ``[T, H, W, 3]`` clip its I2V image came from (None: no PSNR, as for T2V)."""
    from lumos_megatron.evaluation_metrics import frame_differences, psnr
    from lumos_megatron.evaluation_metrics.generated_set import load_samples, sample_codes

    samples, unreadable = load_samples(directory)
    if unreadable:
        raise ValueError(f"{directory}: unreadable samples {unreadable}")
    psnrs, flickers, codes = [], [], []
    for sample in samples:
        sample_code = sample_codes(sample)
        clip = tokenizer.decode(sample_code).cpu().numpy()
        if sources is not None:
            source = sources[sample.name]
            psnrs.append([psnr(clip[t:t + 1], source[t:t + 1]) for t in range(min(len(clip), len(source)))])
        flickers.append(list((255.0 - frame_differences(clip)) / 255.0))
        codes.append(sample_code.numpy())
    frames = min((len(p) for p in psnrs), default=0)
    latent = min(len(c) for c in codes)
    return {
        "samples": len(samples),
        "psnr_per_frame": [float(np.mean([p[t] for p in psnrs])) for t in range(frames)],
        "flicker_per_pair": [float(np.mean([f[t] for f in flickers])) for t in range(min(map(len, flickers)))],
        "code_perplexity_per_latent_frame": [_pooled_perplexity([c[t] for c in codes], tokenizer.codebook_size)
                                             for t in range(latent)],
    }


def plot_rho_inf(results: Dict[str, Dict[float, Dict[str, object]]], path: Path, rgb_per_latent: int = 4) -> None:
    """One row per task (``{"i2v": {rho: metrics}, "t2v": ...}``), three panels each (PSNR per RGB
    frame, flicker per pair, code perplexity per latent frame), one line per ρ_inf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("psnr_per_frame", "PSNR vs source (dB), per RGB frame", "RGB frame"),
              ("flicker_per_pair", "temporal flicker term (1 = static), per pair", "pair (t, t+1)"),
              ("code_perplexity_per_latent_frame", "code perplexity, per latent frame", "latent frame"))
    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.3 * len(results)), squeeze=False)
    for row, (task, by_rho) in zip(axes, results.items()):
        for ax, (key, title, xlabel) in zip(row, panels):
            for rho, metrics in sorted(by_rho.items()):
                values = metrics[key]
                if not values:
                    continue
                ax.plot(range(len(values)), values, "o-", markersize=3, linewidth=1, label=f"ρ_inf = {rho:g}")
            ax.set_title(f"{task.upper()}: {title}", fontsize=9)
            ax.set_xlabel(xlabel)
            if not any(metrics[key] for metrics in by_rho.values()):
                ax.axis("off")
                ax.text(0.5, 0.5, f"{task.upper()}: no source clip to compare with", ha="center",
                        transform=ax.transAxes, fontsize=9)
        # Latent frame k >= 1 covers RGB frames 4k-3 .. 4k: mark where each starts.
        frames = max(len(m["psnr_per_frame"]) for m in by_rho.values())
        for k in range(0, (frames - 1) // rgb_per_latent + 1):
            row[0].axvline(rgb_per_latent * k + 0.5, color="grey", linewidth=0.4, linestyle=":")
        row[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
