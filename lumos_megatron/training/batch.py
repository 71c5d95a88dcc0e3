"""Micro-batch assembly: the objective's targets plus the model inputs derived from its tokens.

The path of one micro-batch: unpadded samples → ``Objective.targets`` (AR-DF: the official
transforms and tube mask, ``lumos_megatron.ardf``) → ``models.inputs.model_inputs_for`` (positions,
the backend's mask and frame statistics from one parse of the masked tokens) →
``Objective.loss_inputs`` (labels, loss mask, report inputs) → this context-parallel rank's slice
(``models.cp_sharding``) → the fused loss's rows (:func:`rank_micro_batch`). Every pipeline stage
builds the same micro-batch: positions and the mask are needed on every stage.

Everything whose size depends on the data (which positions carry loss) is decided here, on the
CPU, so that the model's forward and backward never have to ask the device for a shape: such a
question (``nonzero``, boolean-mask indexing, ``.item()``) stalls the host until the GPU has
finished all queued work, once per micro-batch.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.losses.reference import visual_loss_rows
from lumos_megatron.models.cp_sharding import slice_batch_for_cp
from lumos_megatron.models.inputs import model_inputs_for
from lumos_megatron.objective import Objective, TargetBatch, build_objective
from lumos_megatron.vocab import LumosVocab


def assemble_micro_batch(target: TargetBatch, cfg: LumosConfig, vocab: LumosVocab,
                         objective: Objective) -> Tuple[Dict[str, torch.Tensor], float]:
    """(the dict the forward step consumes, allowed attention pairs of the micro-batch).

    Keys: ``tokens``, ``position_ids`` [3, b, s], ``attention_mask`` (the backend's form),
    ``labels``, ``loss_mask`` and the objective's report inputs (AR-DF: ``frame_index``,
    ``mask_stats``). The pair count is the FLOPs model's input; it stays on the data side.
    """
    inputs = model_inputs_for(target.tokens, cfg, vocab, documents=target.documents,
                              real_lengths=target.real_lengths)
    batch = {"tokens": target.tokens, "position_ids": inputs.position_ids,
             "attention_mask": inputs.attention_mask, **objective.loss_inputs(target, inputs.segment_ids)}
    return batch, float(inputs.attention_pairs.sum())


def with_loss_rows(batch: Dict[str, torch.Tensor], vocab: LumosVocab,
                   objective: Objective) -> Dict[str, torch.Tensor]:
    """``batch`` plus ``loss_rows`` when the objective uses the fused visual loss: long [N], the
    rows of the model's hidden layout ``[s, b, h]`` (``labels.t().reshape(-1)`` order) that carry
    loss (``losses.reference.visual_loss_rows``). ``batch`` must be final (after CP slicing): the
    rows index its own, rank-local sequence."""
    if not objective.fused_visual_loss:
        return batch
    return {**batch, "loss_rows": visual_loss_rows(batch["labels"], vocab)}


def rank_micro_batch(target: TargetBatch, cfg: LumosConfig, vocab: LumosVocab, objective: Objective,
                     cp_rank: int) -> Tuple[Dict[str, torch.Tensor], float]:
    """(this CP rank's micro-batch dict, allowed attention pairs of the whole micro-batch).

    The one path from an objective's targets to what the forward step consumes, for training and
    evaluation (``training.feed.DataFeed``): :func:`assemble_micro_batch`, then this rank's
    context-parallel slice (``models.cp_sharding.slice_batch_for_cp``), then, for the fused visual
    loss, ``loss_rows`` over the rank-local sequence (:func:`with_loss_rows`). The rows are found
    here on the CPU rather than in the loss, where they would cost a host sync per micro-batch.
    The pair count covers the whole samples, before slicing (the FLOPs model's input).
    """
    batch, pairs = assemble_micro_batch(target, cfg, vocab, objective)
    batch = slice_batch_for_cp(batch, cfg.parallel.context_parallel_size, cp_rank)
    return with_loss_rows(batch, vocab, objective), pairs


def training_batch(samples: Sequence[Tuple[torch.Tensor, torch.Tensor]], sample_indices: Sequence[int],
                   iteration: int, cfg: LumosConfig, vocab: LumosVocab,
                   seq_length: Optional[int] = None, number_ids=None) -> Dict[str, torch.Tensor]:
    """Unpadded samples of one micro-batch → the forward step's dict, for the configured
    objective. Samples are padded to ``seq_length`` (default ``data.seq_length``); ``number_ids``
    writes the prompt's frame count and fps with the dataset's text tokenizer (None: Chameleon's
    digits). The whole micro-batch, not sliced for context parallelism; ``loss_rows`` (fused visual
    loss) refer to it."""
    objective = build_objective(cfg, vocab)
    target = objective.targets(samples, sample_indices, iteration, seq_length or cfg.data.seq_length,
                               number_ids)
    return with_loss_rows(assemble_micro_batch(target, cfg, vocab, objective)[0], vocab, objective)
