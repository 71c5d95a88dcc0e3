"""A tiny randomly initialised stand-in for Cosmos-Tokenizer DV4x8x8's TorchScript pair.

``write_tiny_cosmos(directory)`` scripts a small encoder/decoder and saves them as
``directory/encoder.jit`` and ``directory/decoder.jit`` with the released files' I/O contract:

* encoder ``[B, 3, T, H, W]`` in [-1, 1] -> ``(indices [B, t, h, w] int32, codes [B, 6, t, h, w],
  loss [B, 1, 1, 1, 1])`` with ``t = 1 + ceil((T - 1) / 4)``, ``h, w = H / 8, W / 8``;
* decoder ``indices [B, t, h, w]`` -> ``[B, 3, 1 + 4 (t - 1), 8h, 8w]`` in [-1, 1].

Like Cosmos, the first frame is repeated into a group of its own, time and space are folded into
channels 4x8x8 at a time (Cosmos uses a Haar wavelet; a plain fold is enough here), a causal
temporal conv mixes latent frames, and the FSQ quantizer has levels (8, 8, 8, 5, 5, 5) with the
basis cumprod([1, 8, 8, 8, 5, 5]). As in Cosmos, the FSQ math runs in float32 even when the convs
run in bf16 (its float32 constants promote the bf16 activations). ``gain`` scales the pre-quant
projection so that most latents sit far from rounding boundaries, which keeps bf16 and fp32 codes
in agreement the way a trained tokenizer's confident latents would.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LEVELS: list[int] = [8, 8, 8, 5, 5, 5]
T_PATCH, S_PATCH = 4, 8
FOLDED = 3 * T_PATCH * S_PATCH * S_PATCH


def _fsq_buffers(module: nn.Module) -> None:
    levels = torch.tensor(LEVELS, dtype=torch.int32)
    basis = torch.cumprod(torch.tensor([1] + LEVELS[:-1]), dim=0).to(torch.int32)
    module.register_buffer("_levels", levels)
    module.register_buffer("_basis", basis)


class TinyCosmosEncoder(nn.Module):
    """Fold 4x8x8 -> 1x1 conv -> causal temporal conv -> quant conv -> FSQ (indices, codes, loss)."""

    def __init__(self, hidden: int = 32, gain: float = 4.0):
        super().__init__()
        _fsq_buffers(self)
        self.t_patch, self.s_patch, self.folded = T_PATCH, S_PATCH, FOLDED
        self.proj_in = nn.Conv3d(FOLDED, hidden, 1)
        self.temporal = nn.Conv3d(hidden, hidden, (2, 1, 1))
        self.quant_conv = nn.Conv3d(hidden, len(LEVELS), 1)
        with torch.no_grad():
            self.quant_conv.weight.mul_(gain)
            self.quant_conv.bias.mul_(gain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, _, height, width = x.shape
        x = torch.cat([x[:, :, :1].repeat(1, 1, self.t_patch - 1, 1, 1), x], dim=2)
        tail = (self.t_patch - x.shape[2] % self.t_patch) % self.t_patch
        if tail > 0:
            x = torch.cat([x, x[:, :, -1:].repeat(1, 1, tail, 1, 1)], dim=2)
        tl, hl, wl = x.shape[2] // self.t_patch, height // self.s_patch, width // self.s_patch
        x = x.reshape(b, c, tl, self.t_patch, hl, self.s_patch, wl, self.s_patch)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, self.folded, tl, hl, wl)
        h = F.silu(self.proj_in(x))
        h = h + F.silu(self.temporal(torch.cat([h[:, :, :1], h], dim=2)))
        z = self.quant_conv(h).permute(0, 2, 3, 4, 1)
        # FSQ exactly as Cosmos FSQuantizer: bound (even levels offset by 0.5), round, normalise.
        half_l = (self._levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset
        half_width = self._levels // 2
        codes = torch.round(bounded) / half_width
        indices = ((codes * half_width + half_width).float() * self._basis).sum(dim=-1).to(torch.int32)
        out = codes.permute(0, 4, 1, 2, 3).to(x.dtype)
        return indices, out, torch.zeros_like(out[:, :1, :1, :1, :1])


class TinyCosmosDecoder(nn.Module):
    """Inverse FSQ -> post-quant conv -> causal temporal conv -> 1x1 conv -> unfold, first 3 frames cut."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        _fsq_buffers(self)
        self.t_patch, self.s_patch, self.folded = T_PATCH, S_PATCH, FOLDED
        self.post_quant_conv = nn.Conv3d(len(LEVELS), hidden, 1)
        self.temporal = nn.Conv3d(hidden, hidden, (2, 1, 1))
        self.proj_out = nn.Conv3d(hidden, FOLDED, 1)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        b, tl, hl, wl = indices.shape
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels
        half_width = self._levels // 2
        codes = ((digits - half_width) / half_width).permute(0, 4, 1, 2, 3)
        h = F.silu(self.post_quant_conv(codes.to(self.post_quant_conv.weight.dtype)))
        h = h + F.silu(self.temporal(torch.cat([h[:, :, :1], h], dim=2)))
        x = torch.tanh(self.proj_out(h))
        x = x.reshape(b, 3, self.t_patch, self.s_patch, self.s_patch, tl, hl, wl)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, 3, tl * self.t_patch, hl * self.s_patch, wl * self.s_patch)
        return x[:, :, self.t_patch - 1:]


def write_tiny_cosmos(directory, seed: int = 0, hidden: int = 32, gain: float = 4.0) -> Path:
    """Script a seeded tiny encoder/decoder pair into ``directory/{encoder,decoder}.jit``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    encoder = torch.jit.script(TinyCosmosEncoder(hidden, gain).eval())
    decoder = torch.jit.script(TinyCosmosDecoder(hidden).eval())
    torch.jit.save(encoder, str(directory / "encoder.jit"))
    torch.jit.save(decoder, str(directory / "decoder.jit"))
    return directory
