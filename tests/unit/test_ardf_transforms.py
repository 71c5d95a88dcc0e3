"""Training-time sample rewrites before the tube mask (docs/method.md §4 order of operations)."""

import pytest
import torch

from lumos_megatron.ardf import ardf_batch, prepare_sample
from lumos_megatron.ardf.sample_transforms import cfg_drop_eligible, keep_first_frames, rewrite_duration_fps
from lumos_megatron.config import LumosConfig
from lumos_megatron.vocab import LumosVocab, build_video_sample, parse_layout

VOCAB = LumosVocab()


def sample(frames=9, duration=7, fps=12, text=(101, 102, 103)):
    codes = torch.randint(0, 100, (frames, 4, 4), generator=torch.Generator().manual_seed(frames))
    return build_video_sample(torch.tensor(text), codes, duration, fps, VOCAB)


def test_keep_first_frames_drops_later_blocks_and_keeps_the_tail():
    tokens, labels = sample(frames=9)
    kept_t, kept_l = keep_first_frames(tokens, labels, 7, VOCAB)
    layout = parse_layout(kept_t, VOCAB)
    assert len(layout.frames) == 7
    assert kept_t.numel() == tokens.numel() - 2 * 24
    assert kept_t[-2:].tolist() == [VOCAB.video_end, VOCAB.separator]
    assert torch.equal(kept_t[: layout.frames[-1].end + 1], tokens[: layout.frames[-1].end + 1])
    assert torch.equal(kept_l[-2:], kept_t[-2:])
    short_t, _ = keep_first_frames(*sample(frames=3), 7, VOCAB)
    assert short_t.numel() == sample(frames=3)[0].numel()


def test_rewrite_duration_fps_sets_prefix_in_tokens_and_labels():
    tokens, labels = sample(frames=2, duration=7, fps=24)
    new_t, new_l = rewrite_duration_fps(tokens, labels, 2, 12, VOCAB)
    at = int((tokens == VOCAB.video_start).nonzero()[0])
    assert new_t[at + 1: at + 3].tolist() == [8806, 8816]
    assert new_l[at + 1: at + 3].tolist() == [8806, 8816]
    assert tokens[at + 1] == VOCAB.size_token(7), "input must not be modified"


def test_cfg_eligibility_rule():
    tokens, _ = sample(frames=2)
    assert cfg_drop_eligible(tokens, VOCAB)
    assert not cfg_drop_eligible(tokens[:-1], VOCAB)
    assert not cfg_drop_eligible(torch.cat([tokens, tokens]), VOCAB)


def test_prepare_sample_order_and_cfg_drop_rate():
    cfg = LumosConfig()
    tokens, labels = sample(frames=9, duration=7, fps=12)
    dropped = 0
    for index in range(2000):
        t, l = prepare_sample(tokens, labels, cfg, VOCAB, iteration=0, sample_index=index)
        assert len(parse_layout(t, VOCAB).frames) == 7
        if int(t[0]) == VOCAB.video_start:
            dropped += 1
            assert t[:3].tolist() == [VOCAB.video_start, 8806, 8816]  # no BOS, no text
        else:
            assert t[0] == VOCAB.bos
    assert 0.08 < dropped / 2000 < 0.12
    images = prepare_sample(*sample(frames=1, duration=1, fps=1), cfg, VOCAB, 0, 0)[0]
    at = int((images == VOCAB.video_start).nonzero()[0])
    assert images[at + 1: at + 3].tolist() == [8805, 8805]


def test_ardf_batch_pads_masks_and_rejects_overlong_samples():
    cfg = LumosConfig()
    cfg.data.seq_length = 400
    samples = [sample(frames=2), sample(frames=3)]
    result = ardf_batch(samples, [10, 11], 0, cfg, VOCAB)
    assert result.tokens.shape == (2, 400)
    assert (result.tokens == VOCAB.mask).any()
    again = ardf_batch(samples, [10, 11], 0, cfg, VOCAB)
    assert torch.equal(result.tokens, again.tokens), "deterministic per (seed, iteration, sample)"
    cfg.data.seq_length = 50
    with pytest.raises(ValueError, match="sample 10 has"):
        ardf_batch(samples, [10, 11], 0, cfg, VOCAB)


@pytest.mark.parametrize("frames,expected", [
    # 7 kept latent frames: "24 frames at 12 frames per second" (docs/method.md §1.3).
    (22, ([16401, 16403], [16400, 16401])),
    # Images: "1 frames at 1 frames per second".
    (1, ([16400], [16400])),
])
def test_prepare_sample_fills_the_prompt_placeholders_from_the_final_prefix(frames, expected):
    cfg = LumosConfig()
    cfg.ardf.cfg_drop_prob = 0.0
    text = (101, VOCAB.frames_placeholder, 102, VOCAB.fps_placeholder, 103)
    duration, fps = (7, 12) if frames > 1 else (1, 1)
    tokens, labels = prepare_sample(*sample(frames, duration, fps, text), cfg, VOCAB, 0, 0)
    frames_ids, fps_ids = expected
    assert tokens[1:6 + len(frames_ids) + len(fps_ids) - 2].tolist() == [
        101, *frames_ids, 102, *fps_ids, 103]
    start = int((tokens == VOCAB.video_start).nonzero()[0])
    assert (labels[:start] == -100).all()
    # The video part is untouched by the fill: it still parses, with the visual ids 65539/65540.
    assert len(parse_layout(tokens, VOCAB).frames) == min(frames, 7)


def test_number_writer_of_another_tokenizer_is_used():
    cfg = LumosConfig()
    cfg.ardf.cfg_drop_prob = 0.0
    text = (101, VOCAB.frames_placeholder, VOCAB.fps_placeholder)
    tokens, _ = prepare_sample(*sample(9, 7, 12, text), cfg, VOCAB, 0, 0,
                               number_ids=lambda n: [20000 + n])
    assert tokens[1:4].tolist() == [101, 20024, 20012]
