"""What a run trains: the AR-DF visual objective (official) or plain next-token prediction.

An :class:`Objective` owns everything that differs between the two: the targets of a micro-batch
(samples → padded input tokens and per-position targets), which positions carry loss, whether
the model replaces its output layer with the fused visual cross-entropy, the loss reduction and
its reports, and the LM-head shape the FLOPs model counts. :func:`build_objective` is the only
reader of ``cfg.ardf.enabled``; everything else asks the objective.

AR-DF (docs/method.md §4): the official per-sample transforms and the temporal tube mask
(``lumos_megatron.ardf``), unshifted targets at the masked visual positions, a softmax over the
visual columns only. Next-token: padded samples, position i predicts the label of token i + 1,
over the full vocabulary (a baseline, not the Lumos objective).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.data.collate import pack_rows, pad_samples, sample_lengths
from lumos_megatron.losses.reference import visual_rows
from lumos_megatron.losses.visual_loss_head import VisualLossHead
from lumos_megatron.vocab import IGNORE_INDEX, LumosVocab

Sample = Tuple[torch.Tensor, torch.Tensor]
NumberIds = Optional[Callable[[int], List[int]]]


@dataclass
class TargetBatch:
    """A micro-batch of one objective before model inputs are derived from its tokens."""

    tokens: torch.Tensor
    """[b, s] long model input (AR-DF: with the tube-masked positions replaced by the mask id)."""
    targets: torch.Tensor
    """[b, s] long: the id each position must predict, ``IGNORE_INDEX`` where none."""
    mask_stats: Optional[torch.Tensor] = None
    """AR-DF: float [masked, maskable] content positions of the batch (for ``ardf/mask-ratio``)."""
    real_lengths: Optional[List[int]] = None
    """Tokens of each row before its padding (its sample, or its packed samples)."""
    documents: Optional[List[List[int]]] = None
    """Packed rows: the lengths of the samples each row concatenates (None: one sample per row)."""

    def packed(self, seq_length: int, vocab: LumosVocab) -> "TargetBatch":
        """The rows (one sample each, ``real_lengths`` set) concatenated into one packed row of
        ``seq_length``: every sample keeps its own targets, so none predicts its neighbour."""
        lengths = list(self.real_lengths)
        return TargetBatch(pack_rows(self.tokens, lengths, seq_length, vocab.pad),
                           pack_rows(self.targets, lengths, seq_length, IGNORE_INDEX),
                           self.mask_stats, [sum(lengths)], [lengths])


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position i predicts the label of token i+1 (ignored where that is -100)."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


class Objective:
    """Base: the next-token bookkeeping both objectives share; subclasses override the rest."""

    name = "next-token"
    fused_visual_loss = False
    """True: the model's last stage computes the fused chunked visual CE instead of logits."""
    loss_chunk_rows = 1024
    """Rows per chunk of the fused visual CE."""
    max_latent_frames: Optional[int] = None
    """Latent frames a sample keeps (None: all); padded lengths are computed after dropping."""
    report_frames = 0
    """Latent frames 0..N-1 reported separately (``loss/frame_k``)."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab):
        self.cfg, self.vocab = cfg, vocab

    def targets(self, samples: Sequence[Sample], sample_indices: Sequence[int], iteration: int,
                seq_length: int, number_ids: NumberIds = None, packed: bool = False) -> TargetBatch:
        """Unpadded ``(tokens, labels)`` samples of one micro-batch (with their global indices and
        the training iteration, which key any randomness) → padded :class:`TargetBatch`, or with
        ``packed`` one row of ``seq_length`` holding them all (each transformed as unpacked)."""
        tokens, labels = pad_samples(samples, seq_length, self.vocab, sample_indices)
        batch = TargetBatch(tokens, next_token_targets(labels), real_lengths=sample_lengths(samples))
        return batch.packed(seq_length, self.vocab) if packed else batch

    def carries_loss(self, targets: torch.Tensor) -> torch.Tensor:
        """bool [b, s]: the positions whose loss counts."""
        return targets != IGNORE_INDEX

    def loss_inputs(self, batch: TargetBatch, segment_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss side of the micro-batch dict: ``labels`` (targets with ignored positions set
        to 0: megatron's vocab-parallel CE has no ignore index) and ``loss_mask`` (float)."""
        loss_mask = self.carries_loss(batch.targets)
        labels = torch.where(batch.targets != IGNORE_INDEX, batch.targets, torch.zeros_like(batch.targets))
        return {"labels": labels, "loss_mask": loss_mask.float()}

    def loss_func(self, loss_mask: torch.Tensor, output_tensor: torch.Tensor,
                  frame_index: Optional[torch.Tensor] = None,
                  mask_stats: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Dict]:
        """Per-token loss [b, s] → (sum over loss tokens, number of loss tokens, reports).

        Returning the token count makes megatron (``calculate_per_token_loss``) divide the
        gradient by the number of loss tokens of the whole global batch: a token mean over
        micro-batches and DP ranks, the official reduction. Tokens whose loss is exactly 0 are
        not counted, as the official mean drops them (``all_closs[all_closs != 0]``); their
        gradient is 0 anyway.

        Reports (each a tensor of sums, reduced over micro-batches and DP by the loop): ``lm
        loss`` ``[sum, tokens]``; with ``frame_index`` [b, s] (latent frame of each loss
        position, -1 elsewhere) ``frame loss`` ``[report_frames, 2]``; with ``mask_stats``
        ``mask ratio`` ``[masked, maskable]``.
        """
        losses = output_tensor.float()
        counted = (loss_mask > 0) & (losses != 0)
        loss_sum = torch.sum(losses * counted)
        num_tokens = counted.sum().to(torch.int)
        reports = {"lm loss": torch.stack([loss_sum.detach(), num_tokens.float()])}
        if frame_index is not None and self.report_frames > 0:
            # Static shapes only: boolean-mask indexing (frame_index[in_range]) would have a
            # data-dependent length and stall the host on the device once per micro-batch. Every
            # position is added instead; those out of range add 0 to frame 0, which leaves the
            # sums unchanged (where(), not a product, so a non-finite loss elsewhere stays out).
            in_range = counted & (frame_index >= 0) & (frame_index < self.report_frames)
            idx = torch.where(in_range, frame_index, torch.zeros_like(frame_index)).reshape(-1)
            per_frame = torch.zeros(self.report_frames, 2, dtype=torch.float32, device=losses.device)
            per_frame[:, 0].index_add_(0, idx, torch.where(in_range, losses.detach(), 0.0).reshape(-1))
            per_frame[:, 1].index_add_(0, idx, in_range.reshape(-1).float())
            reports["frame loss"] = per_frame
        if mask_stats is not None:
            reports["mask ratio"] = mask_stats.float()
        return loss_sum, num_tokens, reports

    def scalars(self, totals: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """TensorBoard scalars beyond ``lm loss`` from the reduced reports."""
        return {}

    def lm_head_shape(self, tokens: float, loss_rows: float) -> Tuple[float, int]:
        """(rows, columns) of the LM-head product the objective needs, for the FLOPs model:
        every token against the whole vocabulary."""
        return tokens, self.vocab.vocab_size

    def loss_head(self) -> Optional[VisualLossHead]:
        """What ``build_model_chunks`` gets as the model's loss: the fused visual CE when
        ``fused_visual_loss``, else None (megatron's own loss over the full vocabulary)."""
        return VisualLossHead(self.vocab, self.loss_chunk_rows) if self.fused_visual_loss else None


class ARDFObjective(Objective):
    """AR-DF: tube-masked inputs, loss on the masked visual positions over the visual columns."""

    name = "ar-df"
    fused_visual_loss = True

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab):
        super().__init__(cfg, vocab)
        a = cfg.ardf
        self.loss_chunk_rows = a.loss_chunk_rows
        self.max_latent_frames = a.max_latent_frames
        self.report_frames = a.report_frames

    def targets(self, samples, sample_indices, iteration, seq_length, number_ids=None,
                packed: bool = False) -> TargetBatch:
        """The official transforms and tube mask (``ardf.ardf_batch``); targets are the
        unshifted masked labels. Packed: each sample masked with its own key, as unpacked."""
        from lumos_megatron.ardf import ardf_batch

        masked = ardf_batch(samples, sample_indices, iteration, self.cfg, self.vocab, seq_length, number_ids)
        stats = torch.tensor([float(masked.masked.sum()), float(masked.content.sum())])
        batch = TargetBatch(masked.tokens, masked.labels, stats, real_lengths=masked.lengths)
        return batch.packed(seq_length, self.vocab) if packed else batch

    def carries_loss(self, targets: torch.Tensor) -> torch.Tensor:
        """The masked visual positions (target is a visual id; masked new-lines carry none)."""
        return visual_rows(targets, self.vocab)

    def loss_inputs(self, batch: TargetBatch, segment_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Adds ``frame_index`` (latent frame of each loss position, -1 elsewhere) and
        ``mask_stats`` for the reports."""
        out = super().loss_inputs(batch, segment_ids)
        carries = out["loss_mask"] > 0
        out["frame_index"] = torch.where(carries, segment_ids - 1, torch.full_like(segment_ids, -1))
        if batch.mask_stats is not None:
            out["mask_stats"] = batch.mask_stats
        return out

    def scalars(self, totals: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """Per-frame visual loss ``loss/frame_k`` and the realized ``ardf/mask-ratio``."""
        extra = {}
        if "frame loss" in totals:
            for k, (loss_sum, count) in enumerate(totals["frame loss"].tolist()):
                if count > 0:
                    extra[f"loss/frame_{k}"] = loss_sum / count
        if "mask ratio" in totals:
            masked, maskable = totals["mask ratio"].tolist()
            if maskable > 0:
                extra["ardf/mask-ratio"] = masked / maskable
        return extra

    def lm_head_shape(self, tokens: float, loss_rows: float) -> Tuple[float, int]:
        """Only the loss rows, against the visual columns."""
        return loss_rows, self.vocab.num_visual_codes


def build_objective(cfg: LumosConfig, vocab: Optional[LumosVocab] = None) -> Objective:
    """The objective ``cfg`` trains (``ardf.enabled``)."""
    vocab = vocab if vocab is not None else LumosVocab(vocab_size=cfg.model.vocab_size)
    return ARDFObjective(cfg, vocab) if cfg.ardf.enabled else Objective(cfg, vocab)
