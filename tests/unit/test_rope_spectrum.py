"""The RoPE spectrum command: its table is the variants' channel assignment, and it writes the
table, the JSON and the figure."""

from __future__ import annotations

import json
import math

import pytest

from lumos_megatron.models.mm_rope import channel_axes, rope_inv_freq
from lumos_megatron.models.rope_spectrum import axis_frequencies, main, spectrum_rows


@pytest.mark.parametrize("variant", ["mm_rope", "3d_contiguous", "1d"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_the_table_is_the_channel_assignment(variant, head_dim):
    half = head_dim // 2
    axes = channel_axes(head_dim, variant)
    rows = spectrum_rows(head_dim, variant)
    assert sum(r["frequencies"] for r in rows) == half
    assert sorted(k for r in rows for k in r["indices"]) == list(range(half))
    for r in rows:
        if variant != "1d":
            assert {int(axes[k]) for k in r["indices"]} == {"thw".index(r["axis"])}
            assert {int(axes[k + half]) for k in r["indices"]} == {"thw".index(r["axis"])}  # rotate-half partner
        wavelengths = [2 * math.pi / float(rope_inv_freq(head_dim)[k]) for k in r["indices"]]
        assert r["min_wavelength"] == pytest.approx(min(wavelengths))
        assert r["max_wavelength"] == pytest.approx(max(wavelengths))


def test_mm_rope_spreads_every_axis_over_the_spectrum_and_contiguous_does_not():
    mm, contiguous = axis_frequencies(64, "mm_rope"), axis_frequencies(64, "3d_contiguous")
    assert {a: len(k) for a, k in mm.items()} == {"t": 8, "h": 12, "w": 12}  # 4:6:6 per meta group
    assert {a: len(k) for a, k in contiguous.items()} == {"t": 8, "h": 12, "w": 12}  # 2:3:3
    assert mm["t"] == [0, 1, 2, 3, 16, 17, 18, 19]
    assert contiguous["w"] == list(range(20, 32))  # only the slowest pairs
    rows = {r["axis"]: r for r in spectrum_rows(64, "3d_contiguous")}
    mm_rows = {r["axis"]: r for r in spectrum_rows(64, "mm_rope")}
    assert rows["w"]["min_wavelength"] > 1000 > mm_rows["w"]["min_wavelength"]
    assert axis_frequencies(64, "1d") == {"p": list(range(32))}


def test_command_writes_table_json_and_figure(tmp_path, capsys):
    assert main(["--head-dim", "64", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "spectrum.json").read_text())
    assert len(rows) == 7 and (tmp_path / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mm_rope | 64 | t | 8 | 0-3, 16-19 |" in (tmp_path / "spectrum.md").read_text()
    capsys.readouterr()
    assert main(["--head-dim", "48", "--variant", "mm_rope", "--out", str(tmp_path / "bad")]) == 2
    assert "multiple of 32" in capsys.readouterr().err
