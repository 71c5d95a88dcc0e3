"""One latent frame of AR-DF decoding: the masked template and the official per-step update.

docs/method.md §5.2 and §5.2a. Per step, from the conditional and unconditional logits at the
frame's ``N = H_l · W_l`` code positions: CFG on the full-vocabulary fp32 logits, non-visual ids
suppressed, softmax (temperature 1, no top-k), one multinomial draw per position over the full
vocabulary (all N rows, known ones too, then discarded), a cosine number of tokens to re-mask
(``ardf.inference_schedule``), and the lowest Gumbel-perturbed confidences re-masked. The random
draws are exactly the official ones in order: ``multinomial`` then ``uniform_``, every step, from
the sample's own generator, so a seed reproduces official samples token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import torch

from lumos_megatron.ardf.inference_schedule import scheduled_mask_len
from lumos_megatron.vocab import LumosVocab

TemperatureSchedule = Literal["official", "per_frame"]
"""``official``: the Gumbel temperature decays cumulatively, ``τ ← τ · (1 − (s+1)/T)``, and is
never reset, so it is 0 from the end of the first generated frame on (the official code);
``per_frame``: it restarts from the initial temperature at every frame (the evident intent)."""

_TINY = 1e-20  # the official log() clamps its argument here


def frame_template(vocab: LumosVocab, grid: Tuple[int, int]) -> List[int]:
    """The block appended for a frame to generate: ``8197, H, W``, H rows of W mask tokens and a
    new-line, ``8196`` (new-lines are real tokens, never masked in the frame being generated)."""
    rows, cols = grid
    block = [vocab.frame_start, vocab.size_token_for_latents(rows), vocab.size_token_for_latents(cols)]
    for _ in range(rows):
        block += [vocab.mask] * cols + [vocab.new_line]
    return block + [vocab.frame_end]


def code_positions(grid: Tuple[int, int]) -> torch.Tensor:
    """Offsets, within a frame block, of its ``H · W`` visual codes (new-lines excluded)."""
    rows, cols = grid
    return torch.tensor([3 + r * (cols + 1) + c for r in range(rows) for c in range(cols)], dtype=torch.long)


def mask_history(block: List[int], history_indices: List[int], vocab: LumosVocab) -> List[int]:
    """A finished frame block as the KV cache sees it: content positions ``[3, len − 1)`` at
    ``history_indices`` (new-lines included) replaced by the mask token (docs/method.md §5.3)."""
    out = list(block)
    for i in history_indices:
        out[3 + i] = vocab.mask
    return out


@dataclass
class FrameState:
    """Decoding state of one sample's current frame."""

    tokens: torch.Tensor
    """[N] long: the frame's codes as visual ids, the mask id where still unknown."""
    unknown: torch.Tensor
    """[N] bool: positions still masked."""
    temperature: float
    """The Gumbel temperature carried into the next step."""

    @classmethod
    def start(cls, num_tokens: int, vocab: LumosVocab, temperature: float,
              device: Optional[torch.device] = None) -> "FrameState":
        """Every position masked (on ``device``: where the sample's generator draws)."""
        return cls(torch.full((num_tokens,), vocab.mask, dtype=torch.long, device=device),
                   torch.ones(num_tokens, dtype=torch.bool, device=device), temperature)


def decode_step(state: FrameState, cond_logits: torch.Tensor, uncond_logits: torch.Tensor, step: int,
                steps: int, cfg_scale: float, vocab: LumosVocab, generator: torch.Generator,
                num_codes: Optional[int] = None) -> FrameState:
    """Step ``step`` of ``steps`` for one sample: ``cond_logits``/``uncond_logits`` are ``[N, V]``
    (any float dtype; the update runs in fp32, as the official sampler). ``num_codes`` restricts
    sampling to the first codes of the visual range (a video tokenizer with a smaller codebook
    than the model's); None keeps all of them (official). Returns the new state."""
    logits = cfg_scale * (cond_logits.float() - uncond_logits.float()) + uncond_logits.float()
    logits[:, : vocab.visual_offset] = float("-inf")
    if num_codes is not None:
        logits[:, vocab.visual_offset + num_codes:] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    drawn = torch.multinomial(probs, 1, generator=generator)[:, 0]
    sampled = torch.where(state.unknown, drawn, state.tokens)
    selected = torch.gather(probs, -1, sampled.unsqueeze(-1))[:, 0]
    selected = torch.where(state.unknown, selected, torch.full_like(selected, torch.finfo(torch.float32).max))
    num_tokens = sampled.numel()
    temperature = state.temperature * (1.0 - (step + 1) / steps)
    uniform = torch.zeros_like(selected).uniform_(0, 1, generator=generator)  # drawn at every step
    gumbel = -torch.log(torch.clamp(-torch.log(torch.clamp(uniform, min=_TINY)), min=_TINY))
    confidence = torch.log(torch.clamp(selected, min=_TINY)) + temperature * gumbel
    if step == steps - 1:
        return FrameState(sampled, torch.zeros_like(state.unknown), temperature)
    # masked_after_step's clamp to [1, still masked - 1], on the device: reading the masked count
    # back (int(unknown.sum())) would stall the host on the GPU at every step.
    mask_len = torch.clamp(torch.clamp(state.unknown.sum() - 1, max=scheduled_mask_len(num_tokens, step, steps)),
                           min=1)
    cut = torch.sort(confidence).values.gather(0, mask_len.view(1))
    remask = confidence < cut
    return FrameState(torch.where(remask, torch.full_like(sampled, vocab.mask), sampled), remask, temperature)


def block_tensor(template: torch.Tensor, code_offsets: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The frame block as a LongTensor on ``codes``' device: ``template`` (``frame_template`` as a
    tensor on that device) with ``codes`` at ``code_offsets``. No host round trip, unlike
    :func:`frame_block`, so the decoding loop builds each step's block with it."""
    block = template.clone()
    block[code_offsets] = codes
    return block


def frame_block(grid: Tuple[int, int], codes: torch.Tensor, vocab: LumosVocab) -> List[int]:
    """The finished frame block with ``codes`` ([H·W] visual ids) in place of the masks."""
    block = frame_template(vocab, grid)
    for offset, token in zip(code_positions(grid).tolist(), codes.tolist()):
        block[offset] = int(token)
    return block
