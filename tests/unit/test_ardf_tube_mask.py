"""AR-DF tube mask (docs/method.md §4): invariants, the official random order, ratio distribution,
and the counter-stream training path."""

import math

import pytest
import torch

from conftest import lumos_batch
from lumos_megatron.ardf import content_mask, tube_mask, tube_mask_detailed, tube_mask_from_keys
from lumos_megatron.ardf.random_keys import PURPOSE_TUBE_MASK, sample_random_key
from lumos_megatron.ardf.tube_mask import mask_ratio, ratio_uniform
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab, build_video_sample

VOCAB = LumosVocab()


def tiny_layout():
    """The §1.3 tiny layout: 3 text ids, 2 frames of 4x4 latents, codes 0..31."""
    codes = torch.arange(32).view(2, 4, 4)
    tokens, labels = build_video_sample(torch.tensor([101, 102, 103]), codes, 2, 12, VOCAB)
    return tokens[None], labels[None]


def batch_with_labels(frames=3, grid=(8, 8), text_lens=(20, 40)):
    tokens = lumos_batch(text_lens=text_lens, frames=frames, grid=grid)
    labels = tokens.clone()
    for b in range(tokens.shape[0]):
        start = int((tokens[b] == VOCAB.video_start).nonzero()[0])
        labels[b, :start] = IGNORE_INDEX
        labels[b, tokens[b] == VOCAB.pad] = IGNORE_INDEX
    return tokens, labels


def test_content_mask_of_the_tiny_layout_is_codes_and_new_lines():
    tokens, labels = tiny_layout()
    content = content_mask(labels, VOCAB)[0]
    expected = torch.zeros(58, dtype=torch.bool)
    expected[11:31] = True   # frame 0 rows (codes + new-lines)
    expected[35:55] = True   # frame 1
    assert torch.equal(content, expected)


def _check_invariants(tokens, labels, out_tokens, out_labels, ratio):
    content = content_mask(labels, VOCAB)
    masked = out_tokens != tokens
    assert torch.equal(out_tokens[masked], torch.full_like(out_tokens[masked], VOCAB.mask))
    assert not (masked & ~content).any(), "only content positions may be masked"
    assert torch.equal(out_tokens[~content], tokens[~content])
    assert torch.equal(out_labels[~content], labels[~content])
    # Labels survive exactly at masked content positions.
    assert torch.equal(out_labels[content] != IGNORE_INDEX, masked[content])
    assert torch.equal(out_labels[masked], labels[masked])
    for b in range(tokens.shape[0]):
        pos = content[b].nonzero().flatten()
        starts = (tokens[b] == VOCAB.frame_start).nonzero().flatten()
        period = int(pos.numel() // starts.numel())
        frames = masked[b, pos].view(starts.numel(), period)
        assert (frames == frames[0]).all(), "every latent frame shares one spatial pattern"
        assert int(frames[0].sum()) == max(1, round(period * float(ratio[b])))


def test_tube_mask_invariants_and_official_generator_order():
    tokens, labels = batch_with_labels()
    gen = torch.Generator().manual_seed(7)
    out_tokens, out_labels, result = tube_mask_detailed(tokens, labels, VOCAB, gen)
    assert torch.equal(tokens, batch_with_labels()[0]), "inputs must not be modified"
    _check_invariants(tokens, labels, out_tokens, out_labels, result.ratio)

    # The official draw order: rand(B) for the ratios, then rand(1, il).argsort() per sample.
    gen = torch.Generator().manual_seed(7)
    ratio = torch.cos(torch.rand(2, generator=gen) * math.pi * 0.5).clip(0.7)
    il = 8 * 9
    for b in range(2):
        n = (il * ratio[b]).round().clamp(min=1)
        pattern = torch.rand(1, il, generator=gen).argsort(dim=-1)[0] < n
        pos = content_mask(labels, VOCAB)[b].nonzero().flatten()
        assert torch.equal(out_tokens[b, pos] == VOCAB.mask, pattern.repeat(3))


def test_tube_mask_contract_signature_and_new_lines_are_maskable():
    tokens, labels = tiny_layout()
    saw_new_line = False
    for seed in range(20):
        out_tokens, out_labels = tube_mask(tokens, labels, VOCAB, torch.Generator().manual_seed(seed))
        masked = out_tokens != tokens
        saw_new_line |= bool((masked & (tokens == VOCAB.new_line)).any())
        # Masked new-lines keep label 8803 (< visual offset): they carry no visual loss.
        loss_rows = int((out_labels >= VOCAB.visual_offset).sum())
        assert loss_rows == int(masked.sum()) - int((masked & (tokens == VOCAB.new_line)).sum())
    assert saw_new_line


def test_mask_ratio_distribution():
    r = mask_ratio(torch.rand(200_000, generator=torch.Generator().manual_seed(0)), 0.7)
    p_min = 1 - 2 / math.pi * math.acos(0.7)
    assert abs(float((r == 0.7).float().mean()) - p_min) < 0.005
    assert abs(float(r.mean()) - 0.8002) < 0.002
    # The counter-stream path has the same distribution.
    u = torch.tensor([ratio_uniform(sample_random_key(0, 0, i, PURPOSE_TUBE_MASK)) for i in range(50_000)])
    r = mask_ratio(u, 0.7)
    assert abs(float((r == 0.7).float().mean()) - 0.4936) < 0.01
    assert abs(float(r.mean()) - 0.8002) < 0.004


def test_stream_masks_are_per_sample_and_independent_of_batching():
    tokens, labels = batch_with_labels(text_lens=(20, 40, 30, 25))
    streams = [sample_random_key(3, 5, i, PURPOSE_TUBE_MASK) for i in range(4)]
    whole = tube_mask_from_keys(tokens, labels, VOCAB, streams)
    _check_invariants(tokens, labels, whole.tokens, whole.labels, whole.ratio)
    halves = [tube_mask_from_keys(tokens[i:i + 2], labels[i:i + 2], VOCAB, streams[i:i + 2])
              for i in (0, 2)]
    assert torch.equal(whole.tokens, torch.cat([h.tokens for h in halves]))
    assert torch.equal(whole.labels, torch.cat([h.labels for h in halves]))
    other = tube_mask_from_keys(tokens, labels, VOCAB, [s + 1 for s in streams])
    assert not torch.equal(other.tokens, whole.tokens)
    masked, maskable = whole.realized_ratio()
    assert 0.6 < masked / maskable <= 1.0


def test_bad_input_is_rejected():
    tokens, labels = tiny_layout()
    with pytest.raises(ValueError, match="int64"):
        tube_mask(tokens.int(), labels, VOCAB)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        tube_mask(tokens[0], labels[0], VOCAB)
    with pytest.raises(ValueError, match="streams"):
        tube_mask_from_keys(tokens, labels, VOCAB, [1, 2])
