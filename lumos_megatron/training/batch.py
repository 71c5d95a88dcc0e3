"""Micro-batch assembly: the objective's targets plus the model inputs derived from its tokens.

The path of one micro-batch: unpadded samples → ``Objective.targets`` (AR-DF: the official
transforms and tube mask, ``lumos_megatron.ardf``) → ``models.inputs.model_inputs_for`` (positions,
the backend's mask and frame statistics from one parse of the masked tokens) →
``Objective.loss_inputs`` (labels, loss mask, report inputs). Every pipeline stage builds the
same micro-batch: positions and the mask are needed on every stage.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from lumos_megatron.config.schema import LumosConfig
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
    inputs = model_inputs_for(target.tokens, cfg, vocab)
    batch = {"tokens": target.tokens, "position_ids": inputs.position_ids,
             "attention_mask": inputs.attention_mask, **objective.loss_inputs(target, inputs.segment_ids)}
    return batch, float(inputs.attention_pairs.sum())


def training_batch(samples: Sequence[Tuple[torch.Tensor, torch.Tensor]], sample_indices: Sequence[int],
                   iteration: int, cfg: LumosConfig, vocab: LumosVocab,
                   seq_length: Optional[int] = None, number_ids=None) -> Dict[str, torch.Tensor]:
    """Unpadded samples of one micro-batch → the forward step's dict, for the configured
    objective. Samples are padded to ``seq_length`` (default ``data.seq_length``); ``number_ids``
    writes the prompt's frame count and fps with the dataset's text tokenizer (None: Chameleon's
    digits)."""
    objective = build_objective(cfg, vocab)
    target = objective.targets(samples, sample_indices, iteration, seq_length or cfg.data.seq_length,
                               number_ids)
    return assemble_micro_batch(target, cfg, vocab, objective)[0]
