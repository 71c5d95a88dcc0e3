"""Vocabulary ids and the §1.2/§1.3 sample layout: builder, CFG helper and parser validation."""

import pytest
import torch

from lumos_megatron.vocab import (
    IGNORE_INDEX,
    LumosVocab,
    build_video_sample,
    parse_batch,
    parse_layout,
    unconditional,
)

TINY_VOCAB = LumosVocab(vocab_size=65600)

# The 58 ids of docs/method.md §1.3 tiny layout, written out by hand from the listing there.
TINY_IDS = (
    [0, 101, 102, 103, 8710, 9004, 8806, 8816, 8197, 8805, 8805]
    + sum([[65536 + 4 * r + c for c in range(4)] + [8803] for r in range(4)], [])
    + [8196, 8197, 8805, 8805]
    + sum([[65552 + 4 * r + c for c in range(4)] + [8803] for r in range(4)], [])
    + [8196, 9005, 8710]
)


def tiny():
    """The §1.3 tiny layout (tokens, labels)."""
    return build_video_sample(
        [101, 102, 103], codes=torch.arange(32).view(2, 4, 4), duration=2, fps=12, vocab=TINY_VOCAB
    )


# ---------------------------------------------------------------------------- vocab
def test_vocab_defaults():
    v = LumosVocab()
    assert (v.vocab_size, v.bos, v.frame_start, v.frame_end, v.new_line) == (129536, 0, 8197, 8196, 8803)
    assert (v.separator, v.mask, v.video_start, v.video_end) == (8710, 9003, 9004, 9005)
    assert (v.visual_offset, v.text_vocab_size, v.num_visual_codes) == (65536, 65536, 64000)
    assert v.size_token(12) == 8816 and v.size_value(8825) == 21
    assert v.visual_id(5) == 65541 and v.code_of(65541) == 5
    assert v.latents_from_size_token(8816) == 48 and v.size_token_for_latents(84) == 8825
    ids = torch.tensor([0, 65535, 65536, 129535, 129536])
    assert v.is_visual(ids).tolist() == [False, False, True, True, False]
    assert v.code_of(torch.tensor([65536, 65600])).tolist() == [0, 64]


def test_vocab_small_and_invalid():
    assert TINY_VOCAB.num_visual_codes == 64
    assert TINY_VOCAB.is_visual(torch.tensor([65599, 65600])).tolist() == [True, False]
    with pytest.raises(ValueError, match="vocab_size"):
        LumosVocab(vocab_size=65536)
    with pytest.raises(ValueError, match="collide"):
        LumosVocab(mask=9004)
    with pytest.raises(ValueError, match="text range"):
        LumosVocab(frame_start=70000)
    with pytest.raises(ValueError, match="size-token range"):
        LumosVocab(separator=8810)
    with pytest.raises(ValueError, match="outside"):
        TINY_VOCAB.visual_id(64)
    with pytest.raises(ValueError, match="not a visual id"):
        TINY_VOCAB.code_of(8803)
    with pytest.raises(ValueError, match="not a size token"):
        TINY_VOCAB.size_value(9003)
    with pytest.raises(ValueError, match="multiple of 4"):
        TINY_VOCAB.size_token_for_latents(6)


# ---------------------------------------------------------------------------- builder
def test_tiny_layout_ids_and_labels():
    tokens, labels = tiny()
    assert tokens.dtype == torch.long and labels.dtype == torch.long
    assert tokens.tolist() == TINY_IDS and len(TINY_IDS) == 58
    assert tokens[11:31].tolist() == [65536, 65537, 65538, 65539, 8803, 65540, 65541, 65542, 65543,
                                      8803, 65544, 65545, 65546, 65547, 8803, 65548, 65549, 65550,
                                      65551, 8803]
    assert tokens[56:].tolist() == [9005, 8710]
    assert labels[:5].tolist() == [IGNORE_INDEX] * 5
    assert labels[5:].tolist() == tokens[5:].tolist()


def test_builder_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 4"):
        build_video_sample([1], torch.zeros(1, 6, 4, dtype=torch.long), 1, 1, TINY_VOCAB)
    with pytest.raises(ValueError, match="outside"):
        build_video_sample([1], torch.full((1, 4, 4), 64), 1, 1, TINY_VOCAB)
    with pytest.raises(ValueError, match=r"text_ids\[1\]"):
        build_video_sample([1, 8197], torch.zeros(1, 4, 4, dtype=torch.long), 1, 1, TINY_VOCAB)
    tokens, _ = build_video_sample([1], torch.zeros(1, 4, 4, dtype=torch.long), 1, 1, TINY_VOCAB,
                                   add_bos=False)
    assert tokens[:3].tolist() == [1, 8710, 9004]


def test_unconditional():
    tokens, labels = tiny()
    ut, ul = unconditional(tokens, labels, TINY_VOCAB)
    assert ut.tolist() == TINY_IDS[5:] and ul.tolist() == TINY_IDS[5:]
    assert ut[0].item() == 9004
    assert parse_layout(ut, TINY_VOCAB).p0 == 6
    only, none = unconditional(tokens, vocab=TINY_VOCAB)
    assert none is None and only.tolist() == TINY_IDS[5:]
    with pytest.raises(ValueError, match="no video start"):
        unconditional(tokens[:5], vocab=TINY_VOCAB)


# ---------------------------------------------------------------------------- parser
def test_parse_tiny():
    tokens, _ = tiny()
    lay = parse_layout(tokens, TINY_VOCAB)
    assert (lay.video_start, lay.video_end, lay.p0, lay.num_frames) == (5, 56, 11, 2)
    f0, f1 = lay.frames
    assert (f0.start, f0.end, f0.height, f0.width, f0.content_start, f0.content_end) == (8, 31, 4, 4, 11, 31)
    assert (f1.start, f1.end, f1.height, f1.width, f1.content_start, f1.content_end) == (32, 55, 4, 4, 35, 55)
    assert (f1.index, f1.num_content) == (1, 20)


def test_parse_accepts_masked_content_and_no_video_end():
    tokens, _ = tiny()
    masked = tokens.clone()
    masked[11:31] = 9003  # the whole content, new-line columns included
    masked[35:55:3] = 9003
    assert parse_layout(masked, TINY_VOCAB).frames == parse_layout(tokens, TINY_VOCAB).frames
    # Inference prompt: no trailing 9005/8710; and a sequence without any video.
    assert parse_layout(tokens[:56], TINY_VOCAB).video_end is None
    text_only = parse_layout(torch.tensor([0, 5, 6, 8710]), TINY_VOCAB)
    assert text_only.frames == () and text_only.p0 is None


def _expect_error(tokens, pattern, sample=None):
    with pytest.raises(ValueError, match=pattern):
        if sample is None:
            parse_layout(tokens, TINY_VOCAB)
        else:
            parse_batch(tokens, TINY_VOCAB)


def test_parse_errors_name_positions():
    tokens, _ = tiny()
    # Unterminated: drop frame 0's end token.
    t = tokens.clone()
    t[31] = 65536
    _expect_error(t, "unterminated frame block.*position 8")
    _expect_error(tokens[:40], "unterminated frame block.*position 32")
    # Size tokens disagree with the row count (says 8 rows, block has 4).
    t = tokens.clone()
    t[9] = 8806
    _expect_error(t, r"positions 9,10 .*8x4 latents.*position 51.*ends at position 31")
    # Size token out of the size-token range.
    t = tokens.clone()
    t[10] = 9003
    _expect_error(t, "width token 9003 at position 10")
    # New-line column holding a code.
    t = tokens.clone()
    t[20] = 65540
    _expect_error(t, "row 1 of frame 0 at position 20")
    # Code column holding a non-visual, non-mask token.
    t = tokens.clone()
    t[36] = 8803
    _expect_error(t, "row 0, column 1 of frame 1 at position 36")
    # Stray frame end in the text.
    t = tokens.clone()
    t[2] = 8196
    _expect_error(t, "frame end 8196 at position 2 has no matching frame start")
    # Frame after the video end.
    t = torch.cat([tokens, tokens[8:32]])
    _expect_error(t, "frame 2 .*outside the video")
    # The batched parser names the sample.
    broken = torch.cat([tokens[:31], tokens[32:], torch.zeros(1, dtype=torch.long)])
    _expect_error(torch.stack([tokens, broken]), "sample 1: unterminated.*position 8", sample=True)
