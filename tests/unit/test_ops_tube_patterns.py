"""Counter RNG, the tube-mask reference's invariants, and the csrc kernel vs the reference."""

import pytest
import torch

from lumos_megatron.ops import (
    extension_available,
    mix32,
    mix32_int,
    pattern_keys,
    key_base,
    tube_mask_apply,
    tube_mask_apply_reference,
    tube_pattern,
)
from lumos_megatron.ops.counter_rng import M

needs_ext = pytest.mark.skipif(not extension_available(),
                               reason="lumos_megatron._C not built (LUMOS_NO_EXT=1 or no compiler)")
MASK_ID, IGNORE = 8193, -100


# ---- counter RNG ----------------------------------------------------------------------------

def test_mix32_tensor_equals_python_ints():
    gen = torch.Generator().manual_seed(0)
    values = torch.cat([
        torch.randint(0, 2**32, (20000,), generator=gen),
        torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 2, M]),
        # values above 32 bits are reduced mod 2^32 by both versions
        torch.randint(0, 2**62, (1000,), generator=gen),
    ])
    out = mix32(values)
    assert out.dtype == torch.int64 and bool(((out >= 0) & (out <= M)).all())
    assert out.tolist() == [mix32_int(v) for v in values.tolist()]


def test_mix32_known_values():
    # Regression values: the C++/CUDA kernels and saved masks depend on these exact bits.
    assert [mix32_int(v) for v in (0, 1, 2, 0xDEADBEEF, M)] == [
        0x0, 0x688990C0, 0xD1132181, 0xE628C683, 0x6768824A]
    assert key_base(123456789012345) == 0x4AF1E59F


def test_mix32_has_no_collisions_on_consecutive_inputs():
    for start in (0, 2**31 - 2**15, M - 2**16 + 1):
        out = mix32(torch.arange(start, start + 2**16))
        assert out.unique().numel() == 2**16


def test_stream_base_uses_both_halves_and_keys_are_distinct():
    assert key_base(7) != key_base(7 + 2**32)
    assert key_base(0) != key_base(1)
    with pytest.raises(ValueError):
        key_base(-1)
    keys = pattern_keys(2**40 + 3, 5000)
    assert keys.shape == (5000,) and keys.unique().numel() == 5000
    assert keys[17].item() == mix32_int(key_base(2**40 + 3) ^ 17)


# ---- tube pattern and the reference -----------------------------------------------------------

@pytest.mark.parametrize("period,num_masked", [(1, 0), (1, 1), (20, 7), (257, 256), (300, 300)])
def test_tube_pattern_selects_the_smallest_keys(period, num_masked):
    pattern = tube_pattern(11, period, num_masked)
    assert pattern.dtype == torch.bool and int(pattern.sum()) == num_masked
    keys = pattern_keys(11, period)
    if 0 < num_masked < period:
        assert keys[pattern].max() < keys[~pattern].min()
    assert torch.equal(pattern, tube_pattern(11, period, num_masked))  # deterministic


def test_tube_pattern_depends_on_stream_and_rejects_too_many():
    assert not torch.equal(tube_pattern(1, 64, 32), tube_pattern(2, 64, 32))
    with pytest.raises(ValueError):
        tube_pattern(0, 4, 5)


def frame_batch():
    """Two rows of [text][frames of h rows x (w codes + a new-line)]; the 2nd ends mid-frame."""
    h, w = 4, 4
    period = h * (w + 1)
    rows, contents = [], []
    for b, (text, frames, extra) in enumerate(((5, 3, 0), (9, 2, 7))):
        n_content = frames * period + extra
        length = 40 + 3 * period
        tokens = torch.arange(length) + 1000 * (b + 1)
        content = torch.zeros(length, dtype=torch.bool)
        content[text:text + n_content] = True
        rows.append(tokens)
        contents.append(content)
    tokens = torch.stack(rows)
    labels = tokens + 7
    return tokens, labels, torch.stack(contents), period, w


def test_reference_repeats_the_pattern_in_every_frame():
    tokens, labels, content, period, w = frame_batch()
    num_masked, streams = [17, 6], [101, 2**33 + 5]
    t_in, l_in, c_in = tokens.clone(), labels.clone(), content.clone()
    tok, lab, masked = tube_mask_apply_reference(
        tokens, labels, content, torch.tensor([period] * 2), torch.tensor(num_masked),
        torch.tensor(streams), MASK_ID, IGNORE)
    # out of place
    assert torch.equal(tokens, t_in) and torch.equal(labels, l_in) and torch.equal(content, c_in)
    for b in range(2):
        pattern = tube_pattern(streams[b], period, num_masked[b])
        flags = masked[b, content[b]]
        n = flags.numel()
        expected = pattern.repeat(n // period + 1)[:n]
        assert torch.equal(flags, expected)  # includes the partial last frame of row 1
        assert not masked[b, ~content[b]].any()
    # 17 of 20 positions per frame with 4 new-lines among them: new-line slots get masked too
    newline_slots = torch.arange(period) % (w + 1) == w
    assert tube_pattern(streams[0], period, 17)[newline_slots].any()
    assert torch.equal(tok[~content], tokens[~content]) and torch.equal(lab[~content], labels[~content])
    assert bool((tok[masked] == MASK_ID).all()) and torch.equal(lab[masked], labels[masked])
    unmasked_content = content & ~masked
    assert bool((lab[unmasked_content] == IGNORE).all())
    assert torch.equal(tok[unmasked_content], tokens[unmasked_content])
    assert torch.equal(lab == IGNORE, unmasked_content)


def test_reference_leaves_inactive_samples_unchanged():
    tokens, labels, content, period, _ = frame_batch()
    tok, lab, masked = tube_mask_apply_reference(
        tokens, labels, content, torch.tensor([0, period]), torch.tensor([0, 0]),
        torch.tensor([1, 2]), MASK_ID)
    assert torch.equal(tok, tokens) and torch.equal(lab, labels) and not masked.any()


@pytest.mark.parametrize("apply", [tube_mask_apply_reference, tube_mask_apply])
def test_num_masked_above_period_names_the_sample(apply):
    tokens, labels, content, period, _ = frame_batch()
    with pytest.raises(ValueError, match="sample 1"):
        apply(tokens, labels, content, torch.tensor([period, period]),
              torch.tensor([3, period + 1]), torch.tensor([0, 0]), MASK_ID)
    with pytest.raises(ValueError, match="period"):
        apply(tokens, labels, content, torch.tensor([period]), torch.tensor([3]),
              torch.tensor([0]), MASK_ID)


# ---- csrc kernel vs reference -----------------------------------------------------------------

def random_batch(batch, length, gen):
    """Random tokens/labels, random (not contiguous) content, periods incl. 0 and partial frames."""
    tokens = torch.randint(0, 70000, (batch, length), generator=gen)
    labels = torch.randint(0, 70000, (batch, length), generator=gen)
    content = torch.rand(batch, length, generator=gen) < torch.rand(batch, 1, generator=gen)
    period = torch.randint(0, max(2, length // 3), (batch,), generator=gen)
    period[0] = 0  # an unmasked sample
    num_masked = (torch.rand(batch, generator=gen) * (period + 1)).long().clamp(max=period)
    stream = torch.randint(0, 2**62, (batch,), generator=gen)
    return tokens, labels, content, period, num_masked, stream


@needs_ext
@pytest.mark.parametrize("batch,length", [(1, 1), (2, 37), (3, 500), (8, 4100), (5, 0)])
def test_extension_equals_reference(batch, length):
    gen = torch.Generator().manual_seed(batch * 1000 + length)
    args = random_batch(batch, length, gen)
    ref = tube_mask_apply_reference(*args, MASK_ID, IGNORE)
    out = tube_mask_apply(*args, MASK_ID, IGNORE)
    for r, o in zip(ref, out):
        assert r.dtype == o.dtype and torch.equal(r, o)


@needs_ext
def test_extension_handles_strided_inputs_out_of_place():
    gen = torch.Generator().manual_seed(5)
    tokens, labels, content, period, num_masked, stream = random_batch(4, 600, gen)
    # column slices: non-contiguous views
    args = (tokens[:, ::2], labels[:, ::2], content[:, ::2], period // 2, num_masked // 2, stream)
    before = [t.clone() for t in args[:3]]
    ref = tube_mask_apply_reference(*args, MASK_ID, IGNORE)
    out = tube_mask_apply(*args, MASK_ID, IGNORE)
    assert all(torch.equal(r, o) for r, o in zip(ref, out))
    assert all(torch.equal(b, a) for b, a in zip(before, args[:3]))


def test_runtime_opt_out_uses_the_reference(monkeypatch):
    from lumos_megatron.ops import tube_patterns

    calls = []

    def spy(*args):
        calls.append(1)
        return tube_mask_apply_reference(*args)

    monkeypatch.setattr(tube_patterns, "tube_mask_apply_reference", spy)
    monkeypatch.setenv("LUMOS_NO_EXT", "1")
    assert not extension_available()
    args = random_batch(2, 50, torch.Generator().manual_seed(1))
    out = tube_patterns.tube_mask_apply(*args, MASK_ID, IGNORE)
    assert calls == [1] and torch.equal(out[2], tube_mask_apply_reference(*args, MASK_ID, IGNORE)[2])
