"""Cosmos-Tokenizer DV4x8x8 (the Lumos-1 visual tokenizer) from its TorchScript files.

I/O contract of the released ``encoder.jit`` / ``decoder.jit`` (NVIDIA Cosmos-Tokenizer:
``CausalDiscreteVideoTokenizer.encoder_jit`` = encoder -> quant_conv -> FSQ quantizer, and
``decoder_jit`` = inverse quantizer -> post_quant_conv -> decoder):

* encoder: ``[B, 3, T, H, W]`` in [-1, 1] (tokenizer dtype) -> tuple ``(indices [B, t, h, w] int32,
  codes [B, 6, t, h, w], loss)``; ``CausalVideoTokenizer.encode`` keeps ``[:-1]`` and Lumos-1 takes
  element 0, the indices (FSQ levels (8, 8, 8, 5, 5, 5), 64,000 codes);
* decoder: ``indices [B, t, h, w]`` (int) -> ``[B, 3, 1 + 4 (t - 1), 8h, 8w]`` in about [-1, 1].

Pre/post-processing follows the official Lumos-1 path (docs/method.md §7 item 3):
``vid_tokens_from_pil_list`` computes ``pixels / 255 * 2 - 1`` in float64, casts to the tokenizer
dtype (bf16 in Lumos) and encodes the whole clip at once as ``[1, 3, T, H, W]``; ``decode_video``
decodes ``[1, t, h, w]`` int32 indices, casts to float32, clamps to [-1, 1] and converts with
``((x + 1) / 2 * 255).astype(uint8)`` (truncation). Lumos then adds 65536 to the indices to get
LLM ids; this class returns the raw codes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import (
    VideoArray,
    VideoTokenizer,
    check_codes,
    check_video,
    latent_frames_for,
    rgb_frames_for,
    unit_range_to_video,
    video_to_unit_range,
)

ENCODER_FILE = "encoder.jit"
DECODER_FILE = "decoder.jit"
COSMOS_DV_CODEBOOK_SIZE = 64000   # FSQ levels (8, 8, 8, 5, 5, 5)


def default_device() -> torch.device:
    """CUDA when available (the Cosmos JITs are meant for GPU), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, as Lumos-1 runs Cosmos; fp32 on CPU, where bf16 convs are slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class CosmosVideoTokenizer(VideoTokenizer):
    """Cosmos-Tokenizer DV4x8x8 loaded from ``DIR/encoder.jit`` and ``DIR/decoder.jit``.

    Args:
        directory: folder holding the two TorchScript files (e.g. ``Cosmos-Tokenizer-DV4x8x8/``).
        device: where the JITs run (default: CUDA if available, else CPU).
        dtype: compute dtype (default: bf16 on CUDA, fp32 on CPU).
        load_decoder: set False to skip loading ``decoder.jit`` (pre-tokenization only encodes).
    """

    name = "cosmos-dv4x8x8"
    codebook_size = COSMOS_DV_CODEBOOK_SIZE

    def __init__(self, directory: str | Path, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, load_decoder: bool = True):
        self.directory = Path(directory)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        needed = [ENCODER_FILE] + ([DECODER_FILE] if load_decoder else [])
        missing = [n for n in needed if not (self.directory / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"Cosmos tokenizer directory {self.directory} lacks {', '.join(missing)}; it must contain "
                f"{' and '.join(needed)} (e.g. the Cosmos-Tokenizer-DV4x8x8 release files)")
        self.encoder = self._load(self.directory / ENCODER_FILE)
        self.decoder = self._load(self.directory / DECODER_FILE) if load_decoder else None

    def _load(self, path: Path) -> torch.jit.ScriptModule:
        try:
            module = torch.jit.load(str(path), map_location=self.device)
        except Exception as exc:
            raise ValueError(f"cannot load TorchScript file {path}: {exc}") from exc
        return module.eval().to(self.dtype)

    @torch.no_grad()
    def encode(self, video: VideoArray) -> torch.Tensor:
        """uint8 RGB ``[T, H, W, 3]`` (any ``T >= 1``) -> int64 codes ``[T_l, H/8, W/8]`` on the CPU.

        ``T - 1`` need not be a multiple of 4: the Cosmos encoder pads the last group itself
        (Lumos-1 encodes 24-frame clips into 7 latent frames).
        """
        video = check_video(video, self.spatial_compression)
        x = video_to_unit_range(video).to(self.device).to(self.dtype)
        out = self.encoder(x)
        if isinstance(out, torch.Tensor):
            raise ValueError(f"the encoder in {self.directory} returned a single tensor of shape "
                             f"{tuple(out.shape)}, i.e. a continuous (CV) tokenizer; Lumos needs a "
                             f"discrete DV tokenizer whose encoder returns (indices, codes, ...)")
        indices = out[0]
        t, h, w = video.shape[0], video.shape[1], video.shape[2]
        expected = (1, latent_frames_for(t), h // self.spatial_compression, w // self.spatial_compression)
        if tuple(indices.shape) != expected:
            raise ValueError(f"the encoder in {self.directory} produced indices of shape {tuple(indices.shape)} "
                             f"for a {t}x{h}x{w} clip, expected {expected}; is it a DV4x8x8 tokenizer?")
        codes = indices[0].to("cpu", torch.int64)
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(f"the encoder in {self.directory} produced indices outside [0, {self.codebook_size}); "
                             f"Lumos needs FSQ levels (8, 8, 8, 5, 5, 5)")
        return codes

    @torch.no_grad()
    def decode(self, codes: VideoArray) -> torch.Tensor:
        """int codes ``[T_l, H_l, W_l]`` -> uint8 RGB ``[1 + 4 (T_l - 1), 8 H_l, 8 W_l, 3]``.

        uint8 conversion truncates, as Lumos-1's ``_pil_from_chw_tensor`` does.
        """
        if self.decoder is None:
            raise RuntimeError(f"this CosmosVideoTokenizer({self.directory}) was built with "
                               f"load_decoder=False; build it with load_decoder=True to decode")
        codes = check_codes(codes, self.codebook_size)
        # int32 as in Lumos-1 (its bpe->code lookup table is int32).
        x = self.decoder(codes.unsqueeze(0).to(self.device, torch.int32))
        t_l, h_l, w_l = codes.shape
        s = self.spatial_compression
        expected = (1, 3, rgb_frames_for(t_l), h_l * s, w_l * s)
        if tuple(x.shape) != expected:
            raise ValueError(f"the decoder in {self.directory} produced shape {tuple(x.shape)} for codes "
                             f"{tuple(codes.shape)}, expected {expected}; is it a DV4x8x8 tokenizer?")
        return unit_range_to_video(x.float(), rounding="truncate")
