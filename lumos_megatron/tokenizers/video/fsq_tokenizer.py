"""``FSQVideoTokenizer``: the built-in FSQ autoencoder behind the ``VideoTokenizer`` interface,
plus its checkpoint format (``save_fsq_checkpoint`` / ``FSQVideoTokenizer.from_checkpoint``).

Checkpoint: one ``torch.save`` dict ``{"format": "lumos_fsq_video_tokenizer", "version": 1,
"config": {...}, "model": state_dict, ...}``; training adds ``optimizer``, ``step`` and RNG state
under extra keys, which loading for inference ignores. Files are written to a temporary name and
renamed, so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .base import VideoArray, VideoTokenizer, check_codes, check_video, unit_range_to_video, video_to_unit_range
from .fsq_model import FSQVideoAutoencoder, FSQVideoConfig

CHECKPOINT_FORMAT = "lumos_fsq_video_tokenizer"
CHECKPOINT_VERSION = 1


def save_fsq_checkpoint(path: str | Path, model: FSQVideoAutoencoder,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config + weights) and ``extra`` entries to ``path`` atomically."""
    path = Path(path)
    payload: dict[str, Any] = dict(extra or {})
    payload.update(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                   config=model.config.to_dict(),
                   model={k: v.detach().cpu() for k, v in model.state_dict().items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_fsq_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check an FSQ tokenizer checkpoint; returns the whole dict (config, model, extras)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FSQ video tokenizer checkpoint {path} does not exist; train one with "
                                f"tools/train_video_tokenizer.py --output DIR (it writes DIR/last.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle of arbitrary objects
        raise ValueError(f"cannot read FSQ video tokenizer checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an FSQ video tokenizer checkpoint (no format="
                         f"{CHECKPOINT_FORMAT!r}); for Cosmos TorchScript files pass cosmos:DIR")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has FSQ checkpoint version {payload.get('version')}, this code reads "
                         f"version {CHECKPOINT_VERSION}")
    return payload


class FSQVideoTokenizer(VideoTokenizer):
    """Causal 4x8x8 FSQ video tokenizer (our own, trainable on CPU).

    Args:
        model: the autoencoder; its weights are used as they are (eval mode, no gradients).
        device: where encode/decode run (default: the model's device).
        dtype: compute dtype (default: float32; bf16 works on CUDA).
    """

    def __init__(self, model: FSQVideoAutoencoder, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype or torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.codebook_size = model.codebook_size
        self.name = "fsq-" + "x".join(str(v) for v in model.config.levels)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> FSQVideoTokenizer:
        """Build the model from the config saved in ``path`` and load its weights."""
        payload = load_fsq_checkpoint(path)
        model = FSQVideoAutoencoder(FSQVideoConfig.from_dict(payload["config"]))
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as exc:
            raise ValueError(f"weights in {path} do not match its saved config: {exc}") from exc
        return cls(model, device=device or "cpu", dtype=dtype)

    @torch.no_grad()
    def encode(self, video: VideoArray) -> torch.Tensor:
        """uint8 RGB ``[T, H, W, 3]`` (any ``T >= 1``) -> int64 codes ``[T_l, H/8, W/8]`` on the CPU."""
        video = check_video(video, self.spatial_compression)
        x = video_to_unit_range(video).to(self.device, self.dtype)
        _, indices = self.model.encode(x)
        return indices[0].cpu()

    @torch.no_grad()
    def decode(self, codes: VideoArray) -> torch.Tensor:
        """int codes ``[T_l, H_l, W_l]`` -> uint8 RGB ``[1 + 4 (T_l - 1), 8 H_l, 8 W_l, 3]`` (rounded)."""
        codes = check_codes(codes, self.codebook_size)
        x = self.model.decode_indices(codes.unsqueeze(0).to(self.device))
        return unit_range_to_video(x, rounding="round")
