"""The decoding step stays on the device: no host reads inside the step loop.

Every official-token test (tests/unit/test_generation.py) already runs the sampler on the device
its generator lives on; here the step itself is audited. A read of a device value (``.item()``,
``int(tensor)``, ``nonzero``, boolean-mask indexing) in ``decode_step`` or in the assembly of a
step's block would make the host wait for the GPU ~50 times per frame.
"""

from __future__ import annotations

import pytest
import torch

from lumos_megatron.ardf.inference_schedule import masked_after_step, scheduled_mask_len
from lumos_megatron.inference.frame_decoding import (
    FrameState,
    block_tensor,
    code_positions,
    decode_step,
    frame_block,
    frame_template,
)
from lumos_megatron.plan.step_audit import StepAudit
from lumos_megatron.vocab import LumosVocab

VOCAB = LumosVocab(vocab_size=65600)
GRID = (4, 8)


def _run_frame(steps: int, seed: int, audit: StepAudit | None = None):
    n = GRID[0] * GRID[1]
    for step in range(steps):  # host arithmetic on CPU scalars, cached: computed before the loop
        scheduled_mask_len(n, step, steps)
    gen = torch.Generator().manual_seed(seed)
    logits_gen = torch.Generator().manual_seed(100 + seed)
    template = torch.tensor(frame_template(VOCAB, GRID))
    codes = code_positions(GRID)
    state = FrameState.start(n, VOCAB, 1.0)
    unknown_counts = []
    for step in range(steps):
        cond = torch.randn(n, VOCAB.vocab_size, generator=logits_gen)
        uncond = torch.randn(n, VOCAB.vocab_size, generator=logits_gen)
        if audit is not None:
            audit.record = True
        block = block_tensor(template, codes, state.tokens)
        state = decode_step(state, cond, uncond, step, steps, 15.0, VOCAB, gen)
        if audit is not None:
            audit.record = False
        assert block.tolist() == frame_block(GRID, block[codes], VOCAB)
        unknown_counts.append(int(state.unknown.sum()))
    return state, unknown_counts


@pytest.mark.parametrize("steps", [3, 6, 10])
def test_decode_step_has_no_host_read(steps):
    with StepAudit("cpu") as audit:
        state, _ = _run_frame(steps, 0, audit)
    assert audit.findings("syncs") == []
    assert not bool(state.unknown.any()) and bool((state.tokens >= VOCAB.visual_offset).all())


@pytest.mark.parametrize("steps", [3, 6, 10])
def test_remask_counts_follow_the_official_schedule(steps):
    """The on-device clamp re-masks what ``masked_after_step`` prescribes (ties aside, which
    continuous logits never produce)."""
    n = GRID[0] * GRID[1]
    _, counts = _run_frame(steps, 1)
    masked, expected = n, []
    for step in range(steps):
        masked = masked_after_step(n, step, steps, masked)
        expected.append(masked)
    assert counts == expected
