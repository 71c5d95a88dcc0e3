"""``ardf.mask_pattern=random`` (the paper's ablation): an independent pattern per latent frame,
with the tube's ratio and count, from the same per-sample keys; ``tube`` is unchanged."""

import pytest
import torch

from lumos_megatron.ardf.tube_mask import tube_mask_from_keys
from lumos_megatron.config import ConfigError, parse_cli
from lumos_megatron.vocab import LumosVocab, build_video_sample

from conftest import TINY_RECIPE

VOCAB = LumosVocab()
FRAMES, ROWS, COLS = 4, 4, 8


def _batch(n):
    gen = torch.Generator().manual_seed(0)
    samples = [build_video_sample(torch.randint(10000, 20000, (12,), generator=gen),
                                  torch.randint(0, 64000, (FRAMES, ROWS, COLS), generator=gen), 2, 12, VOCAB)
               for _ in range(n)]
    return torch.stack([t for t, _ in samples]), torch.stack([l for _, l in samples])


def _per_frame(result, b):
    """[frames, period] bool: the masked content positions of sample b, frame by frame."""
    masked = result.masked[b][result.content[b]]
    return masked.view(FRAMES, -1)


def test_random_pattern_keeps_the_tube_ratio_and_first_frame_and_draws_each_frame_anew():
    tokens, labels = _batch(64)
    keys = [1000 + 7 * b for b in range(64)]
    tube = tube_mask_from_keys(tokens, labels, VOCAB, keys, 0.7, "tube")
    rand = tube_mask_from_keys(tokens, labels, VOCAB, keys, 0.7, "random")
    assert torch.equal(tube.ratio, rand.ratio) and torch.equal(tube.content, rand.content)
    overlaps, expected = [], []
    for b in range(64):
        t, r = _per_frame(tube, b), _per_frame(rand, b)
        assert (t == t[0]).all()  # the tube: one pattern in every frame
        assert torch.equal(r[0], t[0])  # the same first frame
        assert r.sum(1).tolist() == t.sum(1).tolist()  # the same count in every frame
        n, p = int(t[0].sum()), t.shape[1]
        if n < p:  # (a ratio near 1 masks everything: nothing to draw)
            assert any(not torch.equal(r[f], r[0]) for f in range(1, FRAMES))
        overlaps.append(float((r[1] & r[2]).sum()))
        expected.append(n * n / p)  # independent frames: hypergeometric mean overlap
    # Independent across frames: the mean overlap of two frames' masks is n^2 / p, not n.
    assert sum(overlaps) == pytest.approx(sum(expected), rel=0.1)
    # Masked inputs and loss positions follow the pattern, as for the tube.
    assert torch.equal(rand.tokens == VOCAB.mask, rand.masked)
    assert torch.equal((rand.labels != -100) & rand.content, rand.masked)


def test_mask_pattern_is_a_config_choice():
    cfg = parse_cli(["--config", str(TINY_RECIPE), "ardf.mask_pattern=random"])
    assert cfg.ardf.mask_pattern == "random"
    assert parse_cli(["--config", str(TINY_RECIPE)]).ardf.mask_pattern == "tube"
    with pytest.raises(ConfigError, match="mask_pattern"):
        parse_cli(["--config", str(TINY_RECIPE), "ardf.mask_pattern=stripes"])


def test_rope_position_scale_moves_the_3d_ids_and_defaults_to_the_tokenizers_compression():
    from lumos_megatron.config.schema import rope_position_scale
    from lumos_megatron.models.inputs import model_inputs_for
    from lumos_megatron.models.mm_rope import mm_rope_positions
    from lumos_megatron.tokenizers.video.base import SPATIAL_COMPRESSION, TEMPORAL_COMPRESSION
    from lumos_megatron.vocab import parse_batch

    tokens, _ = _batch(1)
    layout = parse_batch(tokens, VOCAB)[0]
    default = mm_rope_positions(tokens, VOCAB)
    scaled = mm_rope_positions(tokens, VOCAB, (2, 3, 5))
    p0 = layout.p0
    for frame in layout.frames:
        sl = slice(frame.content_start, frame.content_end)
        idx = torch.arange(frame.num_content)
        row, col = idx // (frame.width + 1), idx % (frame.width + 1)
        assert bool((default.thw[0, 0, sl] == p0 + 4 * frame.index).all())
        assert torch.equal(default.thw[1, 0, sl], p0 + 8 * row) and torch.equal(default.thw[2, 0, sl], p0 + 8 * col)
        assert bool((scaled.thw[0, 0, sl] == p0 + 2 * frame.index).all())
        assert torch.equal(scaled.thw[1, 0, sl], p0 + 3 * row) and torch.equal(scaled.thw[2, 0, sl], p0 + 5 * col)
    assert torch.equal(default.text, scaled.text)  # text positions are not scaled
    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    assert rope_position_scale(cfg) == (TEMPORAL_COMPRESSION, SPATIAL_COMPRESSION, SPATIAL_COMPRESSION) == (4, 8, 8)
    custom = parse_cli(["--config", str(TINY_RECIPE), "model.rope_position_scale=[2,3,5]"])
    # The trainer's path: model inputs from the config carry the configured scale.
    assert torch.equal(model_inputs_for(tokens, custom, VOCAB).position_ids[:, 0], scaled.thw[:, 0])
    assert torch.equal(model_inputs_for(tokens, cfg, VOCAB).position_ids[:, 0], default.thw[:, 0])
    with pytest.raises(ConfigError, match="rope_position_scale"):
        parse_cli(["--config", str(TINY_RECIPE), "model.rope_position_scale=[4,8]"])
