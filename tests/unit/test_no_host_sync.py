"""No host sync in our training hot path: the loss and its reports use static shapes only.

A data-dependent op (``nonzero``, boolean-mask indexing, ``.item()``, ``unique``, ...) on a device
tensor makes the host wait until the GPU has drained its queue. The fused visual loss gets its rows
from the data side (``training.batch.rank_micro_batch``, computed on the CPU) and the objective's
per-frame report adds with static-shape ops. These tests run the CPU ops under a dispatch mode
that records every such op, so they catch a regression without a GPU, and check that the results
equal the old (data-dependent) formulation exactly.
"""

from __future__ import annotations

import traceback
from typing import List

import pytest
import torch

from lumos_megatron.objective import build_objective
from torch.utils._python_dispatch import TorchDispatchMode

from lumos_megatron.config import parse_cli
from lumos_megatron.losses.fused import fused_visual_cross_entropy
from lumos_megatron.losses.reference import visual_loss_rows
from lumos_megatron.models.cp_sharding import cp_local_indices, slice_batch_for_cp
from lumos_megatron.objective import ARDFObjective
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab, build_video_sample

from conftest import TINY_RECIPE

VOCAB = LumosVocab(vocab_size=65600)  # 64 visual codes, as the tiny recipe
aten = torch.ops.aten
SYNCING = {aten.nonzero.default, aten._local_scalar_dense.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
           aten.masked_scatter.default, aten.repeat_interleave.Tensor, aten.is_nonzero.default,
           aten.equal.default}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
            aten._index_put_impl_.default}


class SyncLog(TorchDispatchMode):
    """Records ops whose output shape or value the host must read from the device, with the
    innermost lumos_megatron call site."""

    def __init__(self):
        super().__init__()
        self.hits: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        bool_index = func in INDEXING and any(
            i is not None and i.dtype == torch.bool for i in args[1])
        if func in SYNCING or bool_index:
            ours = [f for f in traceback.extract_stack() if "lumos_megatron" in f.filename]
            where = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else "?"
            self.hits.append(f"{func} at {where}")
        return func(*args, **(kwargs or {}))


def _samples():
    """Two real (tokens, labels) video samples of the tiny recipe's vocabulary (64 codes)."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in (12, 20):
        text = torch.randint(100, 8000, (n,), generator=gen)
        codes = torch.randint(0, VOCAB.num_visual_codes, (2, 4, 4), generator=gen)
        out.append(build_video_sample(text, codes, 2, 12, VOCAB))
    return out


def _labels(b, s, gen):
    labels = torch.full((b, s), IGNORE_INDEX, dtype=torch.long)
    vis = torch.rand(b, s, generator=gen) < 0.5
    labels[vis] = VOCAB.visual_offset + torch.randint(0, 64, (int(vis.sum()),), generator=gen)
    labels[0, 0] = VOCAB.new_line  # a masked new-line: no visual loss
    return labels


def _fused_loss_and_grads(hidden, weight, labels, grad_out, loss_rows=None):
    hidden = hidden.detach().clone().requires_grad_()
    weight = weight.detach().clone().requires_grad_()
    per_token = fused_visual_cross_entropy(hidden, weight, labels, VOCAB, chunk_rows=5,
                                           loss_rows=loss_rows)
    (per_token * grad_out).sum().backward()
    return per_token.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("extension", [True, False], ids=["csrc", "reference-ops"])
def test_fused_loss_with_loss_rows_has_no_sync_and_equals_the_fallback(monkeypatch, extension):
    if not extension:
        monkeypatch.setenv("LUMOS_NO_EXT", "1")  # the pure-PyTorch chunk kernels
    gen = torch.Generator().manual_seed(0)
    s, b, h = 13, 2, 16
    hidden = torch.randn(s, b, h, generator=gen)
    weight = 0.3 * torch.randn(VOCAB.vocab_size, h, generator=gen)
    labels = _labels(b, s, gen)
    grad_out = torch.rand(b, s, generator=gen)
    rows = visual_loss_rows(labels, VOCAB)  # the data side's job, outside the mode

    log = SyncLog()
    with log:
        got = _fused_loss_and_grads(hidden, weight, labels, grad_out, loss_rows=rows)
    assert log.hits == []

    with SyncLog() as fallback_log:
        expected = _fused_loss_and_grads(hidden, weight, labels, grad_out)
    assert any("nonzero" in hit for hit in fallback_log.hits), "the fallback finds its rows itself"
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


def _old_frame_report(losses, counted, frame_index, frames):
    """The previous boolean-indexing formulation, kept here as the reference semantics."""
    in_range = counted & (frame_index >= 0) & (frame_index < frames)
    idx = frame_index[in_range]
    per_frame = torch.zeros(frames, 2)
    per_frame[:, 0].index_add_(0, idx, losses[in_range])
    per_frame[:, 1].index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
    return per_frame


def test_ardf_loss_func_has_no_sync_and_keeps_its_sums():
    cfg = parse_cli(["--config", str(TINY_RECIPE), "ardf.report_frames=3"])
    objective = ARDFObjective(cfg, VOCAB)
    gen = torch.Generator().manual_seed(2)
    b, s = 2, 17
    losses = torch.rand(b, s, generator=gen) * 5
    losses[0, 3] = 0.0                                   # an exact-zero loss is not counted
    loss_mask = (torch.rand(b, s, generator=gen) < 0.7).float()
    frame_index = torch.randint(-1, 5, (b, s), generator=gen)  # -1 and frames >= 3 are not reported
    frame_index = torch.where(loss_mask > 0, frame_index, torch.full_like(frame_index, -1))

    log = SyncLog()
    with log:
        loss_sum, tokens, reports = objective.loss_func(loss_mask, losses, frame_index=frame_index,
                                                        mask_stats=torch.tensor([3.0, 7.0]))
    assert log.hits == []

    # Expected sums, element by element in row-major order (the order index_add_ adds on the CPU).
    per_frame = [[torch.tensor(0.0), 0.0] for _ in range(3)]
    total, count = torch.tensor(0.0), 0
    for i in range(b):
        for j in range(s):
            if loss_mask[i, j] > 0 and losses[i, j] != 0:
                total, count = total + losses[i, j], count + 1
                k = int(frame_index[i, j])
                if 0 <= k < 3:
                    per_frame[k][0] = per_frame[k][0] + losses[i, j]
                    per_frame[k][1] += 1
    expected = torch.tensor([[float(v), n] for v, n in per_frame])
    torch.testing.assert_close(loss_sum, total, rtol=1e-6, atol=0)
    assert int(tokens) == count
    assert torch.equal(reports["frame loss"], expected)
    counted = (loss_mask > 0) & (losses != 0)
    assert torch.equal(reports["frame loss"], _old_frame_report(losses, counted, frame_index, 3))
    assert torch.equal(reports["mask ratio"], torch.tensor([3.0, 7.0]))


@pytest.mark.parametrize("cp", [1, 2])
def test_rank_micro_batch_loss_rows_are_the_visual_rows_of_the_rank_slice(cp):
    from lumos_megatron.objective import build_objective
    from lumos_megatron.training.batch import assemble_micro_batch, rank_micro_batch

    cfg = parse_cli(["--config", str(TINY_RECIPE), f"--context-parallel-size={cp}"])
    objective = build_objective(cfg, VOCAB)
    assert objective.fused_visual_loss
    target = objective.targets(_samples(), [0, 1], 0, cfg.data.seq_length)
    whole, whole_pairs = assemble_micro_batch(target, cfg, VOCAB, objective)
    s = whole["labels"].shape[1]
    global_rows = []
    for rank in range(cp):
        batch, pairs = rank_micro_batch(target, cfg, VOCAB, objective, rank)
        assert pairs == whole_pairs  # the whole samples' pairs, not the slice's
        labels = batch["labels"]
        assert labels.shape[1] == s // cp
        rows = batch["loss_rows"]
        assert rows.dtype == torch.long and rows.device.type == "cpu"
        # Exactly what the fused loss's fallback finds with nonzero on the hidden layout.
        assert torch.equal(rows, (labels.t().reshape(-1) >= VOCAB.visual_offset).nonzero().flatten())
        assert rows.numel() > 0
        # Back to (sample, global position): rows of all CP ranks cover the whole batch's loss rows.
        b = labels.shape[0]
        positions = cp_local_indices(s, cp, rank)[rows // b]
        global_rows += [(int(i), int(p)) for i, p in zip(rows % b, positions)]
    expected = {(int(i), int(p)) for i, p in (whole["labels"] >= VOCAB.visual_offset).nonzero()}
    assert len(global_rows) == len(expected) and set(global_rows) == expected
    if cp > 1:  # rows of a whole batch would index the wrong positions after slicing
        with pytest.raises(ValueError, match="loss_rows"):
            slice_batch_for_cp({**whole, "loss_rows": torch.zeros(1, dtype=torch.long)}, cp, 0)


def test_model_step_with_loss_rows_has_no_sync(megatron_single_process):
    """A whole forward and backward of the model (tiny recipe, TP=1) with the data side's loss
    rows dispatches no syncing op, and gives the loss and gradients of the fallback."""
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.training.batch import training_batch

    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    batch = training_batch(_samples(), [0, 1], 0, cfg, VOCAB)
    model = build_model_chunks(cfg, loss_head=build_objective(cfg).loss_head())[0]
    model.train()

    def run(loss_rows):
        model.zero_grad(set_to_none=True)
        loss = model(batch["tokens"], batch["position_ids"], batch["attention_mask"],
                     labels=batch["labels"], loss_rows=loss_rows)
        (loss * batch["loss_mask"]).sum().backward()
        assert model._loss_rows is None  # cleared after the call
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    log = SyncLog()
    with log:
        loss, grads = run(batch["loss_rows"])
    assert log.hits == []
    ref_loss, ref_grads = run(None)
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads))
