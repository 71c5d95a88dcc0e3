"""The independent reference forward (tests/reference_forward.py) against docs/method.md.

Checks the reference itself: tiny layout (§1.3), MM-RoPE positions and cos table (§2.3, §2.4),
frame-causal mask (§3), the forward on a tiny random official-format checkpoint (§6.1), and the
checkpoint writer of tests/official_format.py.
"""

import json

import pytest
import torch
from safetensors import safe_open

from official_format import random_official_state_dict, tiny_official_config, write_official_checkpoint
from reference_forward import (
    channel_axes,
    frame_causal_allowed,
    mm_rope_positions,
    official_tiny_tokens,
    official_video_tokens,
    reference_logits,
    rope_cos_sin,
)

# §2.4: cos of channels 0..15 for token 17 of the tiny layout (t = 11, h = 19, w = 19), d = 32.
TABLE_COS = [0.004426, 0.995257, -0.943780, -0.375847, -0.323290, 0.481485, 0.824865, 0.943462,
             0.982004, 0.994298, 0.998196, 0.999429, 0.999820, 0.999943, 0.999982, 0.999994]


@pytest.fixture(scope="module")
def tiny_model():
    config = tiny_official_config()
    return config, random_official_state_dict(config, seed=0)


def test_tiny_layout_tokens():
    tokens = official_tiny_tokens()
    assert tokens.shape == (58,) and tokens.dtype == torch.long
    assert tokens[:11].tolist() == [0, 101, 102, 103, 8710, 9004, 8806, 8816, 8197, 8805, 8805]
    assert tokens[11:31].tolist() == [65536, 65537, 65538, 65539, 8803, 65540, 65541, 65542, 65543,
                                      8803, 65544, 65545, 65546, 65547, 8803, 65548, 65549, 65550,
                                      65551, 8803]
    assert tokens[31].item() == 8196 and tokens[32:35].tolist() == [8197, 8805, 8805]
    assert tokens[55:].tolist() == [8196, 9005, 8710]
    assert int(tokens.max()) < tiny_official_config()["vocab_size"]


def test_tiny_positions():
    t, h, w, is_content = mm_rope_positions(official_tiny_tokens())
    assert is_content.nonzero().flatten().tolist() == list(range(11, 31)) + list(range(35, 55))
    assert (t[17].item(), h[17].item(), w[17].item()) == (11, 19, 19)  # frame 0, row 1, col 1
    assert (t[41].item(), h[41].item(), w[41].item()) == (15, 19, 19)  # same cell of frame 1
    assert t[35:55].eq(15).all() and t[11:31].eq(11).all()
    assert (t[15].item(), h[15].item(), w[15].item()) == (11, 11, 43)  # new-line of row 0
    for i in [*range(11), *range(31, 35), 55, 56, 57]:  # non-content: 1D position everywhere
        assert (t[i].item(), h[i].item(), w[i].item()) == (i, i, i)


def test_positions_p0_non_square_and_masked_content():
    codes = torch.arange(2 * 4 * 8).view(2, 4, 8) % 64  # 32x64 px frames: 4 rows, 8 cols
    tokens = official_video_tokens([101, 102, 103, 104, 105], codes, 2, 12)
    t, h, w, is_content = mm_rope_positions(tokens)
    p0 = 13  # BOS + 5 text + 8710 + 3 prefix + 3 header
    assert tokens[p0 - 3].item() == 8197 and is_content[p0] and not is_content[p0 - 1]
    newline_row3 = p0 + 3 * 9 + 8
    assert tokens[newline_row3].item() == 8803
    assert (h[newline_row3].item(), w[newline_row3].item()) == (p0 + 24, p0 + 64)
    assert t[p0 + 4 * 9 + 4].item() == p0 + 4  # frame 1
    masked = tokens.clone()
    masked[[p0, p0 + 8, newline_row3]] = 9003  # masked codes and new-line: same ids
    for a, b in zip(mm_rope_positions(masked), (t, h, w, is_content)):
        assert torch.equal(a, b)


def test_channel_axes_and_cos_table():
    assert channel_axes(32)[:16].tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]
    assert torch.equal(channel_axes(32)[16:], channel_axes(32)[:16])
    with pytest.raises(ValueError):
        channel_axes(16)
    cos, sin = rope_cos_sin(official_tiny_tokens(), 32, 10000.0)
    assert cos.shape == (58, 32) and cos.dtype == torch.float32
    expected = torch.tensor(TABLE_COS)
    torch.testing.assert_close(cos[17, :16], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cos[17, 16:], expected, atol=1e-5, rtol=0)
    inv = 10000.0 ** (-torch.arange(16, dtype=torch.float64) * 2 / 32)
    torch.testing.assert_close(cos[3].double(), torch.cos(3 * torch.cat([inv, inv])), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[3].double(), torch.sin(3 * torch.cat([inv, inv])), atol=1e-6, rtol=0)


def test_tiny_frame_causal_mask():
    allowed = frame_causal_allowed(official_tiny_tokens())
    expected = torch.ones(58, 58, dtype=torch.bool).tril()
    expected[8:32, :32] = True
    expected[32:56, :56] = True
    assert allowed.dtype == torch.bool and torch.equal(allowed, expected)
    padded = torch.cat([official_tiny_tokens(), torch.zeros(6, dtype=torch.long)])
    allowed_p = frame_causal_allowed(padded)
    assert torch.equal(allowed_p[:58, :58], expected)
    assert not allowed_p[:58, 58:].any()  # real tokens never see the padding


def test_reference_logits_shape_and_finite(tiny_model):
    config, sd = tiny_model
    tokens = official_tiny_tokens().unsqueeze(0)
    logits = reference_logits(sd, config, tokens)
    assert logits.shape == (1, 58, config["vocab_size"]) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and logits.std() > 0


def test_reference_logits_right_padding_invariance(tiny_model):
    config, sd = tiny_model
    sample0 = official_tiny_tokens()
    sample1 = official_video_tokens(list(range(200, 209)), torch.arange(48).view(3, 4, 4) % 64)
    assert sample1.numel() > sample0.numel()
    batch = torch.zeros(2, sample1.numel(), dtype=torch.long)
    batch[0, :58], batch[1] = sample0, sample1
    alone = reference_logits(sd, config, sample0.unsqueeze(0))
    together = reference_logits(sd, config, batch)
    torch.testing.assert_close(together[0, :58], alone[0], atol=1e-4, rtol=1e-4)
    alone1 = reference_logits(sd, config, sample1.unsqueeze(0))
    torch.testing.assert_close(together[1], alone1[0], atol=1e-4, rtol=1e-4)


def test_frame_block_changes_earlier_logits(tiny_model):
    """Bidirectional frames: changing the last code of frame 0 changes its first token's logits."""
    config, sd = tiny_model
    tokens = official_tiny_tokens()
    changed = tokens.clone()
    changed[29] = 65536 + 60
    a, b = (reference_logits(sd, config, x.unsqueeze(0))[0] for x in (tokens, changed))
    assert not torch.allclose(a[11], b[11])
    torch.testing.assert_close(a[:8], b[:8], atol=0, rtol=0)  # prompt stays causal


def test_qk_norm_row_mapping_matters():
    config = tiny_official_config(model_parallel_size=2)
    sd = random_official_state_dict(config, seed=1, distinct_qk_norm_rows=True)
    assert sd["model.layers.0.self_attn.q_norm.weight"].shape == (2, 32)
    assert not torch.equal(*sd["model.layers.0.self_attn.q_norm.weight"])
    tokens = official_tiny_tokens().unsqueeze(0)
    base = reference_logits(sd, config, tokens)
    swapped = dict(sd)
    for key, value in sd.items():
        if ".q_norm." in key or ".k_norm." in key:
            swapped[key] = value.flip(0)
    assert not torch.allclose(base, reference_logits(swapped, config, tokens), atol=1e-4)


def test_equal_qk_norm_rows_equal_single_shard():
    config2 = tiny_official_config(model_parallel_size=2)
    sd2 = random_official_state_dict(config2, seed=2)
    assert torch.equal(*sd2["model.layers.1.self_attn.k_norm.bias"])
    sd1 = {k: (v[:1] if ("_norm.weight" in k or "_norm.bias" in k) and "self_attn" in k else v)
           for k, v in sd2.items()}
    tokens = official_tiny_tokens().unsqueeze(0)
    torch.testing.assert_close(reference_logits(sd2, config2, tokens),
                               reference_logits(sd1, tiny_official_config(), tokens))


def test_state_dict_keys_shapes_and_determinism():
    config = tiny_official_config()
    sd = random_official_state_dict(config, seed=3)
    assert sd["model.embed_tokens.weight"].shape == (65600, 128)
    assert sd["lm_head.weight"].shape == (65600, 128)
    assert sd["model.layers.1.self_attn.q_proj.weight"].shape == (128, 128)
    assert sd["model.layers.1.self_attn.k_proj.weight"].shape == (64, 128)
    assert sd["model.layers.1.self_attn.o_proj.weight"].shape == (128, 128)
    assert sd["model.layers.1.mlp.down_proj.weight"].shape == (128, 256)
    assert sd["model.layers.0.self_attn.q_norm.bias"].shape == (1, 32)
    assert any(k.startswith("model.vqmodel.") for k in sd)
    assert not any(k.startswith("model.vqmodel.")
                   for k in random_official_state_dict(config, seed=3, include_vqmodel=False))
    again = random_official_state_dict(config, seed=3)
    assert all(torch.equal(sd[k], again[k]) and sd[k].dtype == torch.float32 for k in sd)


@pytest.mark.parametrize("num_shards", [1, 3])
def test_write_official_checkpoint_round_trip(tmp_path, num_shards):
    config = tiny_official_config(vocab_size=80)  # small tensors: round trip only
    sd = random_official_state_dict(config, seed=4)
    out = write_official_checkpoint(tmp_path / "ckpt", config, sd, num_shards=num_shards)
    assert json.loads((out / "config.json").read_text()) == config
    if num_shards == 1:
        files = {k: "model.safetensors" for k in sd}
        assert not (out / "model.safetensors.index.json").exists()
    else:
        index = json.loads((out / "model.safetensors.index.json").read_text())
        files = index["weight_map"]
        assert set(files) == set(sd)
        assert sorted(set(files.values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
        total = sum(v.numel() * v.element_size() for v in sd.values())
        assert index["metadata"]["total_size"] == total
    loaded = {}
    for name in sorted(set(files.values())):
        with safe_open(str(out / name), framework="pt") as f:
            for key in f.keys():
                assert files[key] == name
                loaded[key] = f.get_tensor(key)
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
