"""``load_video_tokenizer(spec)``: one string names a video tokenizer (used by ``--video-tokenizer``).

Accepted forms:

* ``cosmos:DIR`` - Cosmos-Tokenizer DV4x8x8 TorchScript files ``DIR/encoder.jit``, ``DIR/decoder.jit``;
* ``fsq:CKPT.pt`` - a checkpoint of the built-in FSQ tokenizer (``tools/train_video_tokenizer.py``);
* a bare path - a directory containing ``encoder.jit`` is Cosmos, a file is an FSQ checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import VideoTokenizer
from .cosmos import ENCODER_FILE, CosmosVideoTokenizer
from .fsq_tokenizer import FSQVideoTokenizer

SCHEMES = ("cosmos", "fsq")


def parse_video_tokenizer_spec(spec: str) -> tuple:
    """Split a spec into ``(scheme, path)``; a bare path gets its scheme from what it points to."""
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ValueError(f"video tokenizer spec must be a non-empty string like cosmos:DIR or fsq:CKPT.pt, "
                         f"got {spec!r}")
    spec = str(spec).strip()
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in SCHEMES:
        if not rest:
            raise ValueError(f"video tokenizer spec {spec!r} has no path after '{scheme}:'")
        return scheme, Path(rest).expanduser()
    if sep and len(scheme) > 1 and "/" not in scheme and "\\" not in scheme and not Path(spec).exists():
        raise ValueError(f"unknown video tokenizer kind {scheme!r} in {spec!r}; use one of "
                         f"{', '.join(s + ':PATH' for s in SCHEMES)} or a bare path")
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / ENCODER_FILE).is_file():
            return "cosmos", path
        raise ValueError(f"directory {path} has no {ENCODER_FILE}, so it is not a Cosmos tokenizer; "
                         f"pass cosmos:DIR with the Cosmos files or fsq:CKPT.pt")
    if path.is_file():
        return "fsq", path
    raise FileNotFoundError(f"video tokenizer {spec!r}: no such file or directory; pass cosmos:DIR "
                            f"(with {ENCODER_FILE}) or fsq:CKPT.pt")


def load_video_tokenizer(spec: str, device: str | torch.device | None = None,
                         dtype: torch.dtype | None = None) -> VideoTokenizer:
    """Build the tokenizer a spec string names (see module docstring) on ``device``.

    ``device=None`` means CUDA when available for Cosmos and CPU for FSQ; ``dtype=None`` means
    each tokenizer's default (Cosmos: bf16 on CUDA, fp32 on CPU; FSQ: fp32).
    """
    scheme, path = parse_video_tokenizer_spec(spec)
    if scheme == "cosmos":
        return CosmosVideoTokenizer(path, device=device, dtype=dtype)
    return FSQVideoTokenizer.from_checkpoint(path, device=device, dtype=dtype)
