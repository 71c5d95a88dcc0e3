"""LumosModel: megatron-core ``GPTModel`` built from our layer spec, with MM-RoPE attached.

Construction goes through ``position_embedding_type='none'`` (so megatron builds no rotary module,
whose constructors touch CUDA) and then switches the instance to megatron's public ``'mrope'``
dispatch with our :class:`LumosRotaryEmbedding`. The batch carries positions as ``[3, b, s]``
effective positions (or ``[b, s]`` 1D ones) on every pipeline stage.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel

from lumos_megatron.config.schema import LumosConfig, head_dim
from lumos_megatron.losses.fused import fused_visual_cross_entropy
from lumos_megatron.losses.visual_loss_head import VisualLossHead
from lumos_megatron.models.init import initialize_lumos_weights
from lumos_megatron.models.layer_spec import (
    LumosTransformerConfig,
    build_transformer_config,
    lumos_block_spec,
)
from lumos_megatron.models.rotary import LumosRotaryEmbedding


class LumosModel(GPTModel):
    """One pipeline stage (or virtual stage) of the Lumos decoder.

    ``forward(input_ids [b,s], position_ids [3,b,s]|[b,s], attention_mask [b,1,s,s] bool (True =
    masked out) | None, labels=None, loss_rows=None)`` returns logits ``[b, s, V/tp]`` or, with
    labels, the per-token loss ``[b, s]``; intermediate stages return hidden states.

    With a ``loss_head`` (AR-DF: what ``Objective.loss_head`` hands over) the loss is the visual
    cross-entropy of the fused chunked vocab-parallel path (``losses.fused``): ``labels`` are the
    unshifted masked labels and no ``[tokens x vocab]`` logits are formed. Without one, labels
    give megatron's own cross-entropy. Without labels (inference) the full logits come out.
    """

    def __init__(self, cfg: LumosConfig, transformer_config: LumosTransformerConfig,
                 pre_process: bool = True, post_process: bool = True, vp_stage: Optional[int] = None,
                 loss_head: Optional[VisualLossHead] = None):
        super().__init__(
            config=transformer_config,
            transformer_layer_spec=lumos_block_spec(cfg, transformer_config, vp_stage=vp_stage),
            vocab_size=cfg.model.vocab_size,
            max_sequence_length=cfg.model.max_position_embeddings,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=cfg.model.tie_embeddings,
            position_embedding_type="none",
            vp_stage=vp_stage,
        )
        # Switch to megatron's per-sample rotary dispatch with our module (see module docstring).
        self.position_embedding_type = "mrope"
        self.mrope_section = None
        self.rotary_pos_emb = LumosRotaryEmbedding(
            head_dim(cfg), base=cfg.model.rotary_base, variant=cfg.model.rope_variant
        )
        self.visual_loss_vocab = loss_head.vocab if loss_head is not None else None
        self.loss_chunk_rows = loss_head.chunk_rows if loss_head is not None else 1024
        self._loss_rows: Optional[torch.Tensor] = None
        self._logit_positions: Optional[torch.Tensor] = None

    def forward(self, *args, loss_rows: Optional[torch.Tensor] = None,
                logit_positions: Optional[torch.Tensor] = None, **kwargs):
        """``GPTModel.forward`` plus ``loss_rows``: the fused loss's rows of this micro-batch
        (``losses.reference.visual_loss_rows`` of ``labels``, long ``[N]``), precomputed on the
        data side so that the loss selects them without a host sync (docs/megatron.md §3).

        megatron's forward does not carry extra arguments to ``_postprocess``, so they are held
        on the instance for the duration of this call only. Only the last pipeline stage reads
        them; other stages and every caller without them (inference, conversion) are unaffected.

        ``logit_positions`` (inference, long ``[b, N]``): the last stage computes the logits of
        these positions only, ``[b, N, V/tp]``, instead of every position's ``[b, s, V/tp]`` (a
        13k-token row is 6.7 GB of fp32 logits; generation needs one frame block's).
        """
        self._loss_rows, self._logit_positions = loss_rows, logit_positions
        try:
            return super().forward(*args, **kwargs)
        finally:
            # Never leak one micro-batch's rows into the next call (e.g. a forward without them).
            self._loss_rows = self._logit_positions = None

    def _postprocess(self, hidden_states, labels=None, **kwargs):
        """megatron's post-processing, with output layer + loss replaced by the fused visual CE
        when training AR-DF (gpt_model.py:685-714 in 0.16.1; see docs/megatron.md §3); the loss
        rows are the ones :meth:`forward` received (None: the loss finds them itself)."""
        positions = getattr(self, "_logit_positions", None)
        if positions is not None and labels is None and self.post_process:
            # [s, b, h] -> the [N, b, h] rows asked for; megatron's output layer then sees only them.
            index = positions.t().to(hidden_states.device).unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1])
            hidden_states = hidden_states.gather(0, index)
        fused = (self.visual_loss_vocab is not None and labels is not None and self.post_process
                 and self.config.mtp_num_layers is None)
        if not fused:
            return super()._postprocess(hidden_states=hidden_states, labels=labels, **kwargs)
        weight = (self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights
                  else self.output_layer.weight)
        return fused_visual_cross_entropy(
            hidden_states, weight, labels, self.visual_loss_vocab,
            tp_group=parallel_state.get_tensor_model_parallel_group(),
            sequence_parallel=self.config.sequence_parallel,
            chunk_rows=self.loss_chunk_rows,
            loss_rows=self._loss_rows,
        )


def build_model_chunks(cfg: LumosConfig, transformer_config: Optional[LumosTransformerConfig] = None,
                       loss_head: Optional[VisualLossHead] = None) -> List[LumosModel]:
    """This rank's model chunks (one, or VPP of them), weights initialised layout-independently.

    ``loss_head``: the objective's fused visual loss (``Objective.loss_head()``; training AR-DF),
    None for logits and megatron's own loss. Requires ``parallel_state`` to be initialised.
    Parameters are on the current device.
    """
    transformer_config = transformer_config or build_transformer_config(cfg)
    vpp = cfg.parallel.virtual_pipeline_model_parallel_size
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    chunks = []
    for vp_stage in range(vpp or 1):
        stage = vp_stage if vpp else None
        model = LumosModel(
            cfg,
            transformer_config,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage,
            loss_head=loss_head,
        )
        # Built under a device context (the planner's fake CUDA) the parameters are already there;
        # moving them again would try to swap each parameter in place, which fake tensors refuse.
        if any(p.device != device for p in model.parameters()):
            model.to(device)
        initialize_lumos_weights(
            model,
            seed=cfg.train.seed,
            std=cfg.model.init_method_std,
            tp=parallel_state.get_tensor_model_parallel_world_size(),
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        )
        chunks.append(model)
    return chunks
