"""Which rotary frequencies each position axis receives, per RoPE variant and head dim: the
spectral argument of the MM-RoPE ablation (docs/method.md §2.2), as a table and a figure.

A head of dim d rotates d/2 channel pairs; pair k turns at ``inv_freq[k] = base^(-2k/d)`` radians
per position step, i.e. with wavelength ``2 pi / inv_freq[k]`` positions. High k are slow (long
wavelengths). A variant assigns each k to one axis (``mm_rope.channel_axes``):

* ``mm_rope`` interleaves t, h and w inside every meta group of 16 frequencies, so every axis
  spans the whole spectrum, from the fastest pairs to the slowest;
* ``3d_contiguous`` gives t the first (fastest) quarter, h the next 3/8 and w the last 3/8: the
  width axis only gets the slowest pairs, whose wavelengths far exceed the few dozen latent
  columns (times the position scale) a frame has, so neighbouring columns are barely told apart;
* ``1d`` turns every pair by the 1D sequence position.

Text tokens always use the 1D position on every pair (axis ``p``). ``python -m
lumos_megatron.models.rope_spectrum --out DIR`` writes ``spectrum.md`` (the table),
``spectrum.json`` and ``spectrum.png`` (one row per variant: the wavelength of every pair,
coloured by its axis).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lumos_megatron.markdown_table import markdown_table
from lumos_megatron.models.mm_rope import channel_axes, rope_inv_freq
from lumos_megatron.models.rope_variants import ROPE_VARIANTS

AXIS_NAMES = ("t", "h", "w")


def axis_frequencies(head_dim: int, variant: str) -> Dict[str, List[int]]:
    """``{axis: [frequency indices k]}`` for the visual axes of ``variant`` (``p`` for ``1d``)."""
    half = head_dim // 2
    axes = channel_axes(head_dim, variant)[:half].tolist()
    if variant == "1d":
        return {"p": list(range(half))}
    return {name: [k for k in range(half) if axes[k] == i] for i, name in enumerate(AXIS_NAMES)}


def spectrum_rows(head_dim: int, variant: str, base: float = 10000.0) -> List[Dict[str, object]]:
    """One row per axis: its frequency indices and the range of its wavelengths (positions)."""
    wavelength = (2 * math.pi / rope_inv_freq(head_dim, base).double()).tolist()
    rows = []
    for axis, ks in axis_frequencies(head_dim, variant).items():
        rows.append({"variant": variant, "head_dim": head_dim, "axis": axis, "frequencies": len(ks),
                     "indices": ks, "min_wavelength": min(wavelength[k] for k in ks),
                     "max_wavelength": max(wavelength[k] for k in ks),
                     "median_wavelength": sorted(wavelength[k] for k in ks)[len(ks) // 2]})
    return rows


def _ranges(indices: Sequence[int]) -> str:
    """``0-3, 16-19`` for [0, 1, 2, 3, 16, 17, 18, 19]."""
    out, start = [], None
    for i, k in enumerate(indices):
        if start is None:
            start = k
        if i + 1 == len(indices) or indices[i + 1] != k + 1:
            out.append(f"{start}" if start == k else f"{start}-{k}")
            start = None
    return ", ".join(out)


def spectrum_table(rows: List[Dict[str, object]]) -> str:
    """The rows as a markdown table."""
    return markdown_table(
        ["variant", "head dim", "axis", "pairs", "frequency indices k", "wavelength min", "median", "max"],
        [[r["variant"], r["head_dim"], r["axis"], r["frequencies"], _ranges(r["indices"]),
          f"{r['min_wavelength']:.3g}", f"{r['median_wavelength']:.3g}", f"{r['max_wavelength']:.3g}"] for r in rows])


def plot(path: Path, head_dims: Sequence[int], variants: Sequence[str], base: float) -> Path:
    """One panel per (variant, head dim): every pair's wavelength (log scale), coloured by axis."""
    from matplotlib.figure import Figure

    colors = {"t": "tab:red", "h": "tab:blue", "w": "tab:green", "p": "tab:gray"}
    fig = Figure(figsize=(4.2 * len(head_dims), 2.6 * len(variants)))
    for i, variant in enumerate(variants):
        for j, d in enumerate(head_dims):
            ax = fig.add_subplot(len(variants), len(head_dims), i * len(head_dims) + j + 1)
            wavelength = (2 * math.pi / rope_inv_freq(d, base).double()).numpy()
            for axis, ks in axis_frequencies(d, variant).items():
                ax.scatter(ks, wavelength[ks], s=10, color=colors[axis], label=axis)
            ax.set_yscale("log")
            ax.set_title(f"{variant}, head dim {d}", fontsize=9)
            ax.set_xlabel("frequency index k", fontsize=8)
            ax.set_ylabel("wavelength (positions)", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m lumos_megatron.models.rope_spectrum [--head-dim 64 128] [--variant ...] --out DIR``."""
    p = argparse.ArgumentParser(prog="rope_spectrum", description=__doc__.split("\n\n")[0])
    p.add_argument("--head-dim", type=int, nargs="+", default=[64, 128])
    p.add_argument("--variant", nargs="+", default=list(ROPE_VARIANTS), choices=ROPE_VARIANTS)
    p.add_argument("--base", type=float, default=10000.0, help="rotary base (model.rotary_base)")
    p.add_argument("--out", required=True, help="directory for spectrum.md, spectrum.json, spectrum.png")
    args = p.parse_args(argv)
    try:
        rows = [row for v in args.variant for d in args.head_dim for row in spectrum_rows(d, v, args.base)]
    except ValueError as err:  # a head dim the variant cannot carry
        print(f"rope_spectrum: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spectrum.md").write_text(spectrum_table(rows) + "\n")
    (out / "spectrum.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(out / "spectrum.png", args.head_dim, args.variant, args.base)
    print(spectrum_table(rows))
    print(f"wrote {out / 'spectrum.md'}, {out / 'spectrum.json'} and {out / 'spectrum.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
