"""Frame-causal attention mask (docs/method.md §3): tiny layout, per-sample batching, segment ids, errors."""

import pytest
import torch

from lumos_megatron.models.frame_mask import (
    frame_causal_mask,
    frame_segment_ids,
    mask_from_segment_ids,
)
from lumos_megatron.vocab import LumosVocab, build_video_sample, unconditional

TINY_VOCAB = LumosVocab(vocab_size=65600)


def tiny_tokens(text=(101, 102, 103)):
    tokens, _ = build_video_sample(list(text), torch.arange(32).view(2, 4, 4), 2, 12, TINY_VOCAB)
    return tokens


def reference_mask(length, blocks):
    """Causal mask plus full blocks [lo, hi] (inclusive) — the §3 rule written out directly."""
    m = torch.ones(length, length, dtype=torch.bool).tril()
    for lo, hi in blocks:
        m[lo : hi + 1, : hi + 1] = True
    return m


def test_tiny_mask_exact():
    mask = frame_causal_mask(tiny_tokens().unsqueeze(0), TINY_VOCAB)
    assert mask.shape == (1, 58, 58) and mask.dtype == torch.bool
    m = mask[0]
    for i in range(58):
        if 8 <= i <= 31:
            allowed = list(range(0, 32))
        elif 32 <= i <= 55:
            allowed = list(range(0, 56))
        else:
            allowed = list(range(0, i + 1))
        assert m[i].nonzero().flatten().tolist() == allowed, f"row {i}"


def test_segment_ids_and_composition():
    tokens = tiny_tokens()
    seg = frame_segment_ids(tokens, TINY_VOCAB)
    assert seg.shape == (1, 58) and seg.dtype == torch.long
    expected = [0] * 8 + [1] * 24 + [2] * 24 + [0, 0]
    assert seg[0].tolist() == expected
    assert torch.equal(mask_from_segment_ids(seg), frame_causal_mask(tokens, TINY_VOCAB))
    assert torch.equal(mask_from_segment_ids(seg[0]), mask_from_segment_ids(seg))


def test_batch_is_per_sample_not_union():
    a = tiny_tokens()  # frames at 8..31, 32..55
    b = tiny_tokens(text=range(200, 210))  # 7 tokens longer: frames at 15..38, 39..62
    length = b.numel()
    a_pad = torch.cat([a, torch.zeros(length - a.numel(), dtype=torch.long)])
    mask = frame_causal_mask(torch.stack([a_pad, b]), TINY_VOCAB)
    assert torch.equal(mask[0], reference_mask(length, [(8, 31), (32, 55)]))
    assert torch.equal(mask[1], reference_mask(length, [(15, 38), (39, 62)]))
    # Padding is causal and real tokens never see it.
    assert not mask[0, :58, 58:].any()
    assert mask[0, 60].nonzero().flatten().tolist() == list(range(61))


def test_unconditional_mask():
    uncond, _ = unconditional(tiny_tokens(), None, TINY_VOCAB)
    mask = frame_causal_mask(uncond, TINY_VOCAB)
    assert mask.shape == (1, 53, 53)
    assert torch.equal(mask[0], reference_mask(53, [(3, 26), (27, 50)]))


def test_inference_prompt_without_video_end():
    tokens = tiny_tokens()[:56]  # prompt ends at the last frame's 8196
    mask = frame_causal_mask(tokens, TINY_VOCAB)
    assert torch.equal(mask[0], reference_mask(56, [(8, 31), (32, 55)]))


def test_bad_input_errors():
    tokens = tiny_tokens()
    unterminated = tokens.clone()
    unterminated[55] = 0
    with pytest.raises(ValueError, match="sample 1: unterminated frame block.*position 32"):
        frame_causal_mask(torch.stack([tokens, unterminated]), TINY_VOCAB)
    disagree = tokens.clone()
    disagree[33] = 8804 + 2
    with pytest.raises(ValueError, match="sample 0: size tokens at positions 33,34"):
        frame_segment_ids(disagree, TINY_VOCAB)
    with pytest.raises(ValueError, match="integer"):
        frame_segment_ids(tokens.float(), TINY_VOCAB)
