"""Where the sampler gets the logits of a frame block: a KV cache, or a full forward each step.

Both answer ``frame_logits(rows, contexts, blocks, code_offsets)``: for each row (one sequence,
e.g. a sample's conditional prompt), the fp32 logits ``[R, N, V]`` at the ``N`` code positions of
``blocks[i]`` placed after ``contexts[i]``. Contexts only ever grow by finished frames, which the
cached provider forwards once (together with the next block) and keeps; the full provider is the
plain definition, used as the reference and for pipeline-parallel models.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from lumos_megatron.inference.kv_cache import LayerKVCache
from lumos_megatron.models.inputs import build_model_inputs


def _right_pad(seqs: List[List[int]], pad: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


class FullForwardLogits:
    """Every step forwards each row's whole explicit sequence (no cache)."""

    def __init__(self, model):
        self.model = model

    def frame_logits(self, rows: List[int], contexts: List[List[int]], blocks: List[List[int]],
                     code_offsets: torch.Tensor) -> torch.Tensor:
        seqs = [c + b for c, b in zip(contexts, blocks)]
        logits = self.model.forward_logits(_right_pad(seqs, self.model.vocab.pad))
        index = torch.stack([len(c) + code_offsets for c in contexts]).to(logits.device)
        return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


class CachedLogits:
    """The prompt and finished frames are forwarded once and cached; each step forwards one block."""

    def __init__(self, model, num_rows: int, capacity: int):
        self.model = model
        self.cache = LayerKVCache(model._model, num_rows, capacity, model.device)
        self._inputs: Dict[int, Tuple[int, torch.Tensor, torch.Tensor]] = {}

    def _row_inputs(self, row: int, context: List[int], block: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positions [3, L] and segment ids [L] of context + block, parsed once per frame (decoding
        changes codes, never the layout)."""
        known = self._inputs.get(row)
        if known is None or known[0] != len(context):
            cfg = self.model.config
            tokens = torch.tensor(context + block, dtype=torch.long).unsqueeze(0)
            inputs = build_model_inputs(tokens, self.model.vocab, attention_backend_name=cfg.model.attention_backend,
                                        rope_variant=cfg.model.rope_variant, with_attention_mask=False)
            known = (len(context), inputs.position_ids[:, 0], inputs.segment_ids[0])
            self._inputs[row] = known
        return known[1], known[2]

    def frame_logits(self, rows: List[int], contexts: List[List[int]], blocks: List[List[int]],
                     code_offsets: torch.Tensor) -> torch.Tensor:
        device = self.model.device
        news, keeps, positions, segments = [], [], [], []
        for row, context, block in zip(rows, contexts, blocks):
            start = self.cache.lengths[row]
            if start > len(context):
                raise ValueError(f"row {row}: the context shrank below what is cached")
            pos, seg = self._row_inputs(row, context, block)
            news.append(context[start:] + block)
            keeps.append(len(context) - start)
            positions.append(pos[:, start:])
            segments.append(seg[start:])
        q = max(len(n) for n in news)
        tokens = _right_pad(news, self.model.vocab.pad).to(device)
        pos = torch.zeros(3, len(rows), q, dtype=torch.long)
        seg = torch.full((len(rows), q), -1, dtype=torch.long)
        for i, (p, s) in enumerate(zip(positions, segments)):
            pos[:, i, : p.shape[1]] = p
            seg[i, : s.numel()] = s
        index = torch.stack([k + code_offsets for k in keeps]).to(device)
        return self.cache.forward(rows, tokens, pos.to(device), seg.to(device), [len(n) for n in news], keeps, index)
