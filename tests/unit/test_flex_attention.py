"""FlexAttention frame-causal backend on CPU: block mask == dense mask, forward == SDPA, errors.

CPU FlexAttention is forward-only (eager); backward parity is in tests/gpu.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_mask

from lumos_megatron.models.attention.flex import (
    BlockMask,
    FlexCoreAttention,
    block_mask_stats,
    build_frame_causal_block_mask,
    frame_causal_flex_attention,
)
from lumos_megatron.models.attention.sdpa import SDPACoreAttention
from lumos_megatron.models.frame_mask import frame_segment_ids, mask_from_segment_ids
from lumos_megatron.vocab import LumosVocab

from conftest import lumos_batch

REPO = Path(__file__).resolve().parents[2]
VOCAB = LumosVocab()


def tiles(mask, block):
    """[B, L, L] bool → per-tile (any, all) [B, nq, nkv], padding the edge with False."""
    b, lq, lk = mask.shape
    nq, nk = -(-lq // block), -(-lk // block)
    padded = torch.zeros(b, nq * block, nk * block, dtype=torch.bool)
    padded[:, :lq, :lk] = mask
    t = padded.view(b, nq, block, nk, block).transpose(2, 3).flatten(3)
    return t.any(-1), t.all(-1)


def full_tiles(block_mask):
    """[B, nq, nkv] bool of the tiles the block mask lists as full (no mask_mod inside)."""
    num, idx = block_mask.full_kv_num_blocks[:, 0], block_mask.full_kv_indices[:, 0]
    out = torch.zeros(idx.shape, dtype=torch.bool)
    for b in range(num.shape[0]):
        for qb in range(num.shape[1]):
            out[b, qb, idx[b, qb, : num[b, qb]].long()] = True
    return out


@pytest.fixture(scope="module")
def batch():
    tokens = lumos_batch()  # L = 275: not a multiple of 64, so edge tiles are exercised
    seg = frame_segment_ids(tokens, VOCAB)
    return tokens, seg, mask_from_segment_ids(seg)


@pytest.mark.parametrize("block", [64, 128])
def test_block_mask_matches_dense(batch, block):
    _, seg, dense = batch
    assert seg.shape == (2, 275) and int(seg.max()) == 3
    assert not torch.equal(dense[0], dense[1])  # different prompt lengths → different masks
    bm = build_frame_causal_block_mask(seg, block_size=block)
    assert isinstance(bm, BlockMask) and bm.seq_lengths == (275, 275)
    # Token level: the mask_mod evaluated on every (q, kv) pair is the dense mask, per sample.
    token_level = create_mask(bm.mask_mod, 2, None, 275, 275, "cpu")[:, 0]
    assert torch.equal(token_level, dense)
    # Tile level: computed tiles (partial or full) are exactly those with an allowed pair, so
    # every skipped tile is truly empty; full tiles are exactly the all-allowed ones.
    any_, all_ = tiles(dense, block)
    assert torch.equal(bm.to_dense()[:, 0].bool(), any_)
    assert torch.equal(full_tiles(bm), all_)
    stats = block_mask_stats(bm)
    assert abs(sum(stats.values()) - 1.0) < 1e-12
    assert stats["empty"] == pytest.approx(1 - any_.float().mean().item())
    assert stats["full"] == pytest.approx(all_.float().mean().item())


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_flex_forward_matches_dense_sdpa(batch, kv_heads):
    _, seg, dense = batch
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 275, 32, generator=gen)
    k, v = (torch.randn(2, kv_heads, 275, 32, generator=gen) for _ in range(2))
    bm = build_frame_causal_block_mask(seg, block_size=64)
    out = frame_causal_flex_attention(q, k, v, bm, scale=0.2)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense.unsqueeze(1), scale=0.2,
                                         enable_gqa=kv_heads != 4)
    assert out.shape == (2, 4, 275, 32)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_backward_on_cpu_raises_clear_error(batch):
    _, seg, _ = batch
    bm = build_frame_causal_block_mask(seg, block_size=64)
    q = torch.randn(2, 2, 275, 16, requires_grad=True)
    k, v = torch.randn(2, 2, 275, 16), torch.randn(2, 2, 275, 16)
    with pytest.raises(NotImplementedError, match="no backward on CPU.*SDPACoreAttention"):
        frame_causal_flex_attention(q, k, v, bm)
    with torch.no_grad():  # inference with grad-requiring inputs is fine
        assert frame_causal_flex_attention(q, k, v, bm).shape == (2, 2, 275, 16)


def test_length_mismatch_raises(batch):
    _, seg, _ = batch
    bm = build_frame_causal_block_mask(seg[:, :256], block_size=64)
    x = torch.randn(2, 2, 275, 16)
    with pytest.raises(ValueError, match="lengths"):
        frame_causal_flex_attention(x, x, x, bm)


def test_flex_core_attention_matches_sdpa_core_attention(batch):
    from megatron.core.transformer import TransformerConfig

    _, seg, dense = batch
    cfg = TransformerConfig(num_layers=1, hidden_size=128, num_attention_heads=4,
                            num_query_groups=2, kv_channels=32, attention_dropout=0.0)
    flex_mod = FlexCoreAttention(cfg, layer_number=1, attn_mask_type=None).eval()
    sdpa_mod = SDPACoreAttention(cfg, layer_number=1, attn_mask_type=None).eval()
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(275, 2, 4, 32, generator=gen)  # megatron layout [s, b, heads, d]
    key, value = (torch.randn(275, 2, 2, 32, generator=gen) for _ in range(2))
    masked_out = ~dense.unsqueeze(1)  # megatron convention: True = masked out
    ref = sdpa_mod(query, key, value, masked_out)
    bm = build_frame_causal_block_mask(seg, block_size=64)
    torch.testing.assert_close(flex_mod(query, key, value, bm), ref, atol=1e-5, rtol=1e-5)
    # A dense mask falls back to the SDPA path unchanged.
    assert torch.equal(flex_mod(query, key, value, masked_out), ref)
    with pytest.raises(NotImplementedError, match="packed"):
        flex_mod(query, key, value, bm, packed_seq_params=object())


def test_bench_quick_prints_table():
    cmd = [sys.executable, "tools/bench/attention.py", "--quick", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = "\n".join(l for l in lines if l.startswith("#"))
    for needle in ("machine:", "torch ", "date ", "4*B*H*L^2*d*density", "3.5 x fwd"):
        assert needle in header
    table = [l for l in lines if l.startswith("|")]
    assert "backend" in table[0] and "fwd ms" in table[0] and "density" in table[0]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in table[2:]]
    assert [r[3] for r in rows] == ["sdpa-dense", "sdpa-causal", "flex"]
    for r in rows:
        assert len(r) == len(table[0].strip("|").split("|")) and int(r[0]) % 128 == 0
        assert 0.0 < float(r[7]) < 1.0  # density
    assert rows[2][6] == "n/a"  # no CPU backward for flex
    assert float(rows[2][11]) < 1e-4  # flex output agrees with dense SDPA


_TABLES = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices",
           "q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices")


@pytest.mark.parametrize("block", [1, 16, 64, 128])
def test_tile_tables_equal_torchs_builder_on_random_layouts(block):
    """The per-tile builder (the default) gives exactly the tables of torch's create_block_mask
    of the same mask_mod: random prompts, frames, padding, text after the video, lengths that
    are not multiples of the block."""
    gen = torch.Generator().manual_seed(block)
    for _ in range(6):
        length = int(torch.randint(block + 1, 420, (1,), generator=gen))
        seg = torch.zeros(3, length, dtype=torch.long)
        for b in range(3):
            pos = int(torch.randint(0, 40, (1,), generator=gen))
            frame = 1
            while pos < length:
                size = int(torch.randint(1, 150, (1,), generator=gen))
                seg[b, pos: pos + size] = frame
                pos += size + int(torch.randint(0, 3, (1,), generator=gen))  # occasional text between
                frame += 1
            seg[b, length - int(torch.randint(0, 30, (1,), generator=gen)):] = 0  # trailing text/padding
        ours = build_frame_causal_block_mask(seg, block_size=block)
        torch_eager = build_frame_causal_block_mask(seg, block_size=block, compile=False)
        for name in _TABLES:
            assert torch.equal(getattr(ours, name), getattr(torch_eager, name)), (length, name)
        assert torch.equal(ours.to_dense(), torch_eager.to_dense())


def test_tile_tables_without_frames_are_causal():
    seg = torch.zeros(1, 300, dtype=torch.long)
    ours = build_frame_causal_block_mask(seg, block_size=64)
    torch_eager = build_frame_causal_block_mask(seg, block_size=64, compile=False)
    for name in _TABLES:
        assert torch.equal(getattr(ours, name), getattr(torch_eager, name))
