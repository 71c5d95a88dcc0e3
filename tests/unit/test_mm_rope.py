"""MM-RoPE position ids (docs/method.md §2.3), channel→axis maps (§2.2) and the numeric cos table (§2.4)."""

import math

import pytest
import torch

from lumos_megatron.models.mm_rope import (
    angles_from_effective_positions,
    channel_axes,
    effective_positions,
    mm_rope_cos_sin,
    mm_rope_positions,
    rope_inv_freq,
    rotary_angles,
)
from lumos_megatron.vocab import LumosVocab, build_video_sample, unconditional

TINY_VOCAB = LumosVocab(vocab_size=65600)

# §2.4: cos of channels 0..15 for token 17 of the tiny layout (t = 11, h = 19, w = 19), d = 32.
TABLE_COS = [0.004426, 0.995257, -0.943780, -0.375847, -0.323290, 0.481485, 0.824865, 0.943462,
             0.982004, 0.994298, 0.998196, 0.999429, 0.999820, 0.999943, 0.999982, 0.999994]


def tiny_tokens(text=(101, 102, 103)):
    tokens, _ = build_video_sample(list(text), torch.arange(32).view(2, 4, 4), 2, 12, TINY_VOCAB)
    return tokens


def test_tiny_positions():
    pos = mm_rope_positions(tiny_tokens().unsqueeze(0), TINY_VOCAB)
    assert pos.text.shape == (1, 58) and pos.thw.shape == (3, 1, 58) and pos.is_visual.shape == (1, 58)
    assert pos.text.dtype == torch.long and pos.thw.dtype == torch.long and pos.is_visual.dtype == torch.bool
    assert pos.text[0].tolist() == list(range(58))
    assert pos.thw[:, 0, 17].tolist() == [11, 19, 19]
    assert pos.thw[:, 0, 15].tolist() == [11, 11, 43]  # new-line of row 0, frame 0
    assert pos.thw[:, 0, 11].tolist() == [11, 11, 11]
    assert pos.thw[0, 0, 35:55].eq(15).all() and pos.thw[0, 0, 11:31].eq(11).all()
    assert pos.thw[:, 0, 54].tolist() == [15, 11 + 8 * 3, 11 + 8 * 4]
    expected_visual = [11 <= i <= 30 or 35 <= i <= 54 for i in range(58)]
    assert pos.is_visual[0].tolist() == expected_visual
    non_content = ~pos.is_visual[0]
    for axis in range(3):
        assert torch.equal(pos.thw[axis, 0, non_content], pos.text[0, non_content])


def test_one_dim_input_is_batch_of_one_and_masked_input_agrees():
    tokens = tiny_tokens()
    pos = mm_rope_positions(tokens, TINY_VOCAB)
    assert pos.thw.shape == (3, 1, 58)
    masked = tokens.clone()
    masked[11:31:2] = TINY_VOCAB.mask  # hits codes and new-lines (15, 25)
    masked[30] = TINY_VOCAB.mask
    mpos = mm_rope_positions(masked, TINY_VOCAB)
    assert torch.equal(mpos.thw, pos.thw) and torch.equal(mpos.is_visual, pos.is_visual)


def test_unconditional_and_batched_per_sample_p0():
    uncond, _ = unconditional(tiny_tokens(), None, TINY_VOCAB)
    pos = mm_rope_positions(uncond, TINY_VOCAB)
    assert pos.thw[:, 0, 6].tolist() == [6, 6, 6]
    long_text = tiny_tokens(text=range(200, 210))  # 7 more text tokens → P0 = 18
    short = torch.cat([tiny_tokens(), torch.zeros(7, dtype=torch.long)])
    pos = mm_rope_positions(torch.stack([short, long_text]), TINY_VOCAB)
    assert pos.thw[:, 0, 17].tolist() == [11, 19, 19]
    assert pos.thw[:, 1, 24].tolist() == [18, 26, 26]
    assert pos.thw[:, 0, 58:].eq(torch.arange(58, 65)).all()  # padding keeps 1D positions


def test_384p_example():
    vocab = LumosVocab(vocab_size=129536)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(16000, 17000, (266,), generator=gen)  # BOS + 266 + 8710 → 9004 at 268
    codes = torch.randint(0, vocab.num_visual_codes, (7, 48, 84), generator=gen)
    tokens, _ = build_video_sample(text, codes, 2, 12, vocab)
    assert tokens.numel() == 28861 and tokens[268].item() == 9004
    assert tokens[271:274].tolist() == [8197, 8816, 8825]
    pos = mm_rope_positions(tokens, vocab)
    p0 = 274
    starts = [271 + 4084 * f for f in range(7)]
    assert [pos.thw[0, 0, s + 3].item() for s in starts] == [274, 278, 282, 286, 290, 294, 298]
    last = 271 + 4084 - 2  # row 47 new-line of frame 0, just before its 8196
    assert tokens[last].item() == 8803 and tokens[last + 1].item() == 8196
    assert pos.thw[:, 0, last].tolist() == [p0, 650, 946]
    assert pos.is_visual[0].sum().item() == 7 * 48 * 85


def test_cos_table_d32():
    pos = mm_rope_positions(tiny_tokens(), TINY_VOCAB)
    cos, sin = mm_rope_cos_sin(pos, 32)
    assert cos.shape == (1, 58, 32) and cos.dtype == torch.float32 and sin.dtype == torch.float32
    expected = torch.tensor(TABLE_COS + TABLE_COS)
    assert torch.allclose(cos[0, 17].double(), expected.double(), atol=1e-5, rtol=0)
    inv = rope_inv_freq(32)
    assert torch.allclose(inv[:4], torch.tensor([1.0, 0.562341, 0.316228, 0.177828]), atol=1e-6)
    angles = rotary_angles(pos, 32)
    assert math.isclose(angles[0, 17, 2].item(), 3.478505, abs_tol=1e-5)
    # A text token at index 3: angle = 3·inv_freq on every channel.
    assert torch.equal(angles[0, 3], 3.0 * torch.cat([inv, inv]))
    assert torch.allclose(sin[0, 3], torch.sin(3.0 * torch.cat([inv, inv])))


def test_axis_maps():
    ax32 = channel_axes(32)
    assert ax32[:16].tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]
    assert torch.equal(ax32[16:], ax32[:16])
    ax = channel_axes(128)
    assert torch.equal(ax[64:], ax[:64])  # rotate-half pairs share an axis
    k = torch.arange(64)
    t_k = [q for m in range(4) for q in range(16 * m, 16 * m + 4)]
    h_k = [q + 16 * m for m in range(4) for q in (4, 5, 8, 9, 12, 13)]
    w_k = [q + 16 * m for m in range(4) for q in (6, 7, 10, 11, 14, 15)]
    assert k[ax[:64] == 0].tolist() == t_k
    assert k[ax[:64] == 1].tolist() == sorted(h_k)
    assert k[ax[:64] == 2].tolist() == sorted(w_k)
    contiguous = channel_axes(32, "3d_contiguous")
    assert contiguous[:16].tolist() == [0] * 4 + [1] * 6 + [2] * 6
    assert torch.equal(contiguous[16:], contiguous[:16])
    c128 = channel_axes(128, "3d_contiguous")[:64]
    assert c128.tolist() == [0] * 16 + [1] * 24 + [2] * 24


def test_variants_and_effective_positions():
    pos = mm_rope_positions(tiny_tokens(), TINY_VOCAB)
    inv = rope_inv_freq(32)
    inv_full = torch.cat([inv, inv])
    one_d = rotary_angles(pos, 32, variant="1d")
    assert torch.equal(one_d[0], pos.text[0].float()[:, None] * inv_full)
    eff = effective_positions(pos, "1d")
    assert torch.equal(eff, pos.text.unsqueeze(0).expand(3, -1, -1))
    contiguous = rotary_angles(pos, 32, variant="3d_contiguous")
    assert torch.equal(contiguous[0, 17, :4], 11.0 * inv[:4])
    assert torch.equal(contiguous[0, 15, 10:16], 43.0 * inv[10:16])
    # Megatron path: [3, B, L] effective positions → angles equal the direct computation.
    eff = effective_positions(pos)
    assert torch.equal(angles_from_effective_positions(eff, 64), rotary_angles(pos, 64))
    # Non-content tokens use 1D positions even if .thw held something else there.
    weird = type(pos)(pos.text, torch.where(pos.is_visual, pos.thw, 999), pos.is_visual)
    assert torch.equal(rotary_angles(weird, 32), rotary_angles(pos, 32))


def test_bad_head_dim_and_variant():
    pos = mm_rope_positions(tiny_tokens(), TINY_VOCAB)
    with pytest.raises(ValueError, match="multiple of 32"):
        mm_rope_cos_sin(pos, 48)
    with pytest.raises(ValueError, match="multiple of 16"):
        channel_axes(24, "3d_contiguous")
    with pytest.raises(ValueError, match="unknown RoPE variant"):
        channel_axes(32, "2d")
    bad = tiny_tokens()
    bad[9] = 8806
    with pytest.raises(ValueError, match="sample 0: size tokens at positions 9,10"):
        mm_rope_positions(bad, TINY_VOCAB)
