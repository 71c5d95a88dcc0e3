"""Pictures and numbers of the quickstart: side-by-side GIFs, the loss curves, PSNRs.

* PSNR (dB, 8-bit peak) of a clip against its source over their common frames. The tokenizer's
  reconstruction is the ceiling a generator using it can reach; decoding random visual tokens is
  the floor.
* ``side_by_side``: source clip | tokenizer reconstruction | generated, one GIF.
* ``loss_curves``: training loss, validation loss and the per-latent-frame training loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 ``[T, H, W, 3]`` clips over their first ``min(T)`` frames."""
    n = min(len(a), len(b))
    mse = np.mean((a[:n].astype(np.float64) - b[:n].astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def reconstruct(tokenizer, frames: np.ndarray) -> np.ndarray:
    """The video tokenizer's round trip of ``frames``."""
    with torch.no_grad():
        return tokenizer.decode(tokenizer.encode(frames)).cpu().numpy()


def random_token_clip(tokenizer, like_codes_shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Frames decoded from uniformly random codes (the PSNR floor)."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, tokenizer.codebook_size, tuple(like_codes_shape), generator=gen)
    with torch.no_grad():
        return tokenizer.decode(codes).cpu().numpy()


def side_by_side(clips: List[np.ndarray], path: Path, fps: int, scale: int = 3) -> None:
    """One GIF with ``clips`` next to each other (shorter clips hold their last frame), enlarged
    ``scale`` times (nearest neighbour: the pixels stay visible)."""
    from lumos_megatron.inference.video_writer import write_gif

    length = max(len(c) for c in clips)
    height = max(c.shape[1] for c in clips)
    frames = []
    for t in range(length):
        row = []
        for clip in clips:
            frame = clip[min(t, len(clip) - 1)]
            pad = np.zeros((height - frame.shape[0], frame.shape[1], 3), dtype=np.uint8)
            row.append(np.concatenate([frame, pad]) if len(pad) else frame)
            row.append(np.full((height, 2, 3), 255, dtype=np.uint8))  # a white divider
        frames.append(np.concatenate(row[:-1], axis=1))
    enlarged = np.stack(frames).repeat(scale, axis=1).repeat(scale, axis=2)
    write_gif(enlarged, path, fps)


def scalars(tensorboard_dir: Path) -> Dict[str, List[tuple]]:
    """Every scalar series of a TensorBoard directory: tag → [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def loss_curves(series: Dict[str, List[tuple]], path: Path) -> None:
    """PNG of the training loss, the validation loss and the per-frame training losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for tag, style in (("lm loss", "-"), ("lm loss validation", "o-")):
        if tag in series:
            steps, values = zip(*series[tag])
            left.plot(steps, values, style, label=tag, markersize=3)
    left.set_xlabel("iteration")
    left.set_ylabel("visual cross-entropy")
    left.legend()
    left.set_title("AR-DF loss")
    for tag in sorted(t for t in series if t.startswith("loss/frame_") and not t.endswith("vs samples")):
        steps, values = zip(*series[tag])
        right.plot(steps, values, label=tag.split("/")[-1], linewidth=1)
    right.set_xlabel("iteration")
    right.set_title("training loss per latent frame")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def loss_fell(series: Dict[str, List[tuple]]) -> tuple:
    """(mean of the first 10 % of iterations, mean of the last 10 %) of the training loss."""
    values = [v for _, v in series["lm loss"]]
    k = max(1, len(values) // 10)
    return float(np.mean(values[:k])), float(np.mean(values[-k:]))
