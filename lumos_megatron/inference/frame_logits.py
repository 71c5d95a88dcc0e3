"""Where the sampler gets the logits of a frame block: a KV cache, or a full forward each step.

Both answer ``frame_logits(rows, contexts, blocks, code_offsets, layout=None)``: for each row (one
sequence, e.g. a sample's conditional prompt), the fp32 logits ``[R, N, V]`` at the ``N`` code
positions of ``blocks[i]`` placed after ``contexts[i]``. A block is a list of ids or a LongTensor
(the decoding loop keeps it on the device, ``frame_decoding.block_tensor``); for tensors,
``layout`` is the frame template whose structure (not its codes) gives the positions. Contexts only ever grow by finished frames, which the
cached provider forwards once (together with the next block) and keeps; the full provider is the
plain definition, used as the reference and for pipeline-parallel models.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch

from lumos_megatron.inference.kv_cache import LayerKVCache
from lumos_megatron.config.schema import rope_position_scale
from lumos_megatron.models.inputs import build_model_inputs


Block = Union[List[int], torch.Tensor]
"""A frame block: token ids as a list, or a LongTensor [len] on any device."""


def _as_list(block: Block) -> List[int]:
    return block.tolist() if isinstance(block, torch.Tensor) else list(block)


def _right_pad(seqs: List[List[int]], pad: int, width: Optional[int] = None) -> torch.Tensor:
    out = torch.full((len(seqs), width or max(len(s) for s in seqs)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class FullForwardLogits:
    """Every step forwards each row's whole explicit sequence (no cache); the logits are computed
    at the block's code positions only (``InferenceModel.forward_logits(positions=)``), so this
    path also serves pipeline-parallel models without [R, L, V] logits."""

    def __init__(self, model):
        self.model = model

    def frame_logits(self, rows: List[int], contexts: List[List[int]], blocks: List[Block],
                     code_offsets: torch.Tensor, layout: Optional[List[int]] = None) -> torch.Tensor:
        # The reference path parses every sequence from its values on the host anyway.
        seqs = [c + _as_list(b) for c, b in zip(contexts, blocks)]
        index = torch.stack([len(c) + code_offsets for c in contexts])
        # Only the block's code positions reach the output layer: never [R, L, V] logits.
        return self.model.forward_logits(_right_pad(seqs, self.model.vocab.pad), positions=index)


class CachedLogits:
    """The prompt and finished frames are forwarded once and cached; each step forwards one block."""

    def __init__(self, model, num_rows: int, capacity: int):
        self.model = model
        self.cache = LayerKVCache(model._model, num_rows, capacity, model.device)
        self._inputs: Dict[int, Tuple[int, torch.Tensor, torch.Tensor]] = {}
        self._step_key = None
        self._step_inputs = None

    def _row_inputs(self, row: int, context: List[int], block: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positions [3, L] and segment ids [L] of context + block, parsed once per frame (decoding
        changes codes, never the layout)."""
        known = self._inputs.get(row)
        if known is None or known[0] != len(context):
            cfg = self.model.config
            tokens = torch.tensor(context + block, dtype=torch.long).unsqueeze(0)
            inputs = build_model_inputs(tokens, self.model.vocab, attention_backend_name=cfg.model.attention_backend,
                                        rope_variant=cfg.model.rope_variant, with_attention_mask=False,
                                        position_scale=rope_position_scale(cfg))
            known = (len(context), inputs.position_ids[:, 0], inputs.segment_ids[0])
            self._inputs[row] = known
        return known[1], known[2]

    def frame_logits(self, rows: List[int], contexts: List[List[int]], blocks: List[Block],
                     code_offsets: torch.Tensor, layout: Optional[List[int]] = None) -> torch.Tensor:
        device = self.model.device
        key = (tuple(rows), tuple(len(c) for c in contexts), tuple(self.cache.lengths[r] for r in rows))
        if self._step_key != key:
            self._step_key, self._step_inputs = key, self._step_tensors(rows, contexts, blocks, code_offsets, layout)
        pos, seg, index, prefixes, query_lengths, keeps = self._step_inputs
        # Only the block changes between the steps of a frame: every other input is reused, and
        # a block already on the device is written in place (no host round trip per step).
        tokens = prefixes.clone()
        for i, (block, keep) in enumerate(zip(blocks, keeps)):
            block = torch.as_tensor(block, dtype=torch.long)
            tokens[i, keep: keep + block.numel()] = block.to(device, non_blocking=True)
        return self.cache.forward(rows, tokens, pos, seg, query_lengths, keeps, index)

    def _step_tensors(self, rows, contexts, blocks, code_offsets, layout):
        """The device inputs of a step that depend on the contexts only: positions, segments, the
        logits index, and the tokens with the not-yet-cached context in place and padding."""
        device = self.model.device
        news, keeps, positions, segments = [], [], [], []
        for row, context, block in zip(rows, contexts, blocks):
            start = self.cache.lengths[row]
            if start > len(context):
                raise ValueError(f"row {row}: the context shrank below what is cached")
            if isinstance(block, torch.Tensor) and layout is None:
                raise ValueError("a tensor block needs layout= (its frame template) for the positions")
            structure = layout if isinstance(block, torch.Tensor) else list(block)
            pos, seg = self._row_inputs(row, context, structure)
            news.append(context[start:] + structure)
            keeps.append(len(context) - start)
            positions.append(pos[:, start:])
            segments.append(seg[start:])
        q = max(len(n) for n in news)
        prefixes = _right_pad([n[:k] for n, k in zip(news, keeps)], self.model.vocab.pad, width=q)
        pos = torch.zeros(3, len(rows), q, dtype=torch.long)
        seg = torch.full((len(rows), q), -1, dtype=torch.long)
        for i, (p, s) in enumerate(zip(positions, segments)):
            pos[:, i, : p.shape[1]] = p
            seg[i, : s.numel()] = s
        index = torch.stack([k + code_offsets for k in keeps])
        return (pos.to(device), seg.to(device), index.to(device), prefixes.to(device),
                [len(n) for n in news], keeps)
