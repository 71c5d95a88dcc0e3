"""A checkpoint as a model for inference and evaluation: ``load_model(C).forward_logits(tokens)``.

The model is the training model (megatron-core ``GPTModel`` from our layer spec), built from the
checkpoint's ``run_config.yaml`` at the requested TP/PP and loaded with dist_checkpointing, which
reshards whatever layout the checkpoint was saved with. Inputs go through the same builder as
training (``models.inputs``): positions and the frame-causal mask come from the tokens alone.

Runs as a single process (a one-rank gloo/NCCL group is created on demand) or under torchrun,
where every rank calls ``load_model`` and ``forward_logits`` with the same tokens and every rank
gets the full logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch
import torch.distributed as dist

from lumos_megatron.config.stored import read_run_config, resolve_checkpoint_dir
from lumos_megatron.config import LumosConfig, check_runtime_support, validate_config
from lumos_megatron.models.inputs import model_inputs_for
from lumos_megatron.vocab import LumosVocab

_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16"}


class InferenceModel:
    """This rank's stage of a loaded Lumos model, in eval mode."""

    def __init__(self, cfg: LumosConfig, vocab: LumosVocab, chunks: List[torch.nn.Module],
                 device: torch.device, checkpoint: Path):
        self.config = cfg
        """The run configuration (model shape, backend, RoPE variant; parallel sizes as loaded)."""
        self.vocab = vocab
        """The unified vocabulary of the model."""
        self.checkpoint = checkpoint
        """The ``iter_*`` directory the weights came from."""
        self.device = device
        self._model = chunks[0]

    @torch.no_grad()
    def forward_logits(self, tokens: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``tokens`` LongTensor ``[B, L]`` (or ``[L]``) → fp32 logits ``[B, L, V]``, or with
        ``positions`` (long ``[B, N]``) only those positions' logits, ``[B, N, V]``: the output
        layer then runs on N rows per sequence, and pipeline stages exchange only them.

        Position i's logits predict token i + 1 (no shift applied). The frame-causal mask and the
        MM-RoPE positions are derived from the tokens; right padding with the pad id is causal
        text that real tokens never see. Malformed layouts raise ValueError naming the position.
        """
        from megatron.core import parallel_state as ps
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        tokens = tokens.to(self.device)
        inputs = model_inputs_for(tokens, self.config, self.vocab)
        mask = inputs.attention_mask
        if isinstance(mask, torch.Tensor):
            mask = mask.to(self.device)
        batch, length = tokens.shape
        if positions is not None:
            positions = torch.as_tensor(positions, dtype=torch.long).reshape(batch, -1).to(self.device)
        rows = length if positions is None else positions.shape[1]
        first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
        if not first:  # activations of the previous stage: [s, b, hidden]
            hidden = torch.empty(length, batch, self.config.model.hidden_size,
                                 dtype=next(self._model.parameters()).dtype, device=self.device)
            dist.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
            self._model.set_input_tensor(hidden)
        out = self._model(input_ids=tokens, position_ids=inputs.position_ids.to(self.device), attention_mask=mask,
                          logit_positions=positions)
        if not last:
            dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
            logits = torch.empty(batch, rows, self.config.model.vocab_size, dtype=torch.float32, device=self.device)
        else:
            logits = gather_from_tensor_model_parallel_region(out).float().contiguous()
        if ps.get_pipeline_model_parallel_world_size() > 1:
            dist.broadcast(logits, src=ps.get_pipeline_model_parallel_last_rank(),
                           group=ps.get_pipeline_model_parallel_group())
        return logits

    def close(self, *, barrier: bool = True) -> None:
        """Release the process groups ``load_model`` created (safe to call twice).

        Call it (or use the model as a context manager) before a multi-rank script exits: a
        rank that leaves with its gloo/NCCL group alive can abort at interpreter shutdown
        ("terminate called without an active exception") while another rank is still writing.
        ``barrier=False`` skips the wait for the other ranks (the context manager's choice when
        leaving on an exception, which the other ranks may never reach).
        """
        from lumos_megatron.platform.distributed import shutdown_distributed

        if barrier and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # every rank finished with the model before any group goes away
        shutdown_distributed()

    def __enter__(self) -> "InferenceModel":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(barrier=exc_type is None)


def _inference_config(cfg: LumosConfig, dtype: torch.dtype, world_size: int, tp: Optional[int], pp: int,
                      attention_backend: Optional[str]) -> LumosConfig:
    if dtype not in _PRECISION:
        raise ValueError(f"dtype {dtype}: expected torch.float32 or torch.bfloat16")
    tp = tp or max(1, world_size // pp)
    p = cfg.parallel
    p.tensor_model_parallel_size, p.pipeline_model_parallel_size = tp, pp
    p.context_parallel_size, p.virtual_pipeline_model_parallel_size = 1, None
    p.sequence_parallel, p.use_distributed_optimizer, p.overlap_grad_reduce = False, False, False
    dp = max(1, world_size // (tp * pp))
    cfg.train.micro_batch_size, cfg.train.global_batch_size = 1, dp
    cfg.train.precision = _PRECISION[dtype]
    cfg.model.recompute_granularity, cfg.model.recompute_num_layers = None, None
    cfg.data.image_data_path, cfg.data.mock_image = [], False
    if attention_backend is not None:
        cfg.model.attention_backend = attention_backend
    validate_config(cfg)
    check_runtime_support(cfg, training=False)
    return cfg


def load_model(ckpt_dir: str | Path, *, iteration: Optional[int] = None, dtype: torch.dtype = torch.float32,
               device: Optional[torch.device | str] = None, tensor_parallel_size: Optional[int] = None,
               pipeline_parallel_size: int = 1, attention_backend: Optional[str] = None) -> InferenceModel:
    """Load checkpoint ``ckpt_dir`` (a root or one ``iter_*`` directory) for inference.

    ``iteration`` picks a checkpoint under a root (default: the latest). ``dtype`` is the compute
    dtype (fp32 or bf16; logits are always fp32). ``device`` defaults to the current CUDA device,
    else CPU. Under torchrun the model is split over the ranks: ``tensor_parallel_size`` defaults
    to world size / ``pipeline_parallel_size``. ``attention_backend`` overrides the recorded one
    (e.g. ``'sdpa'`` for a model trained with TE on a machine without it).

    Raises ``CheckpointError`` for a missing or damaged checkpoint and ``ConfigError`` for a
    layout this machine cannot run.
    """
    from lumos_megatron.checkpoint.load import load_model_weights
    from lumos_megatron.models.lumos_model import build_model_chunks
    from lumos_megatron.platform.distributed import init_distributed
    from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout, seed_model_parallel_rng

    path = resolve_checkpoint_dir(ckpt_dir, iteration)
    cfg = read_run_config(path)
    init_distributed()  # a one-rank group when not launched by torchrun/srun
    world_size = dist.get_world_size()
    cfg = _inference_config(cfg, dtype, world_size, tensor_parallel_size, pipeline_parallel_size, attention_backend)
    initialize_parallel_state(cfg, resolve_layout(cfg, world_size))
    seed_model_parallel_rng(cfg.train.seed)
    chunks = build_model_chunks(cfg)
    load_model_weights(path, chunks)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    for chunk in chunks:
        chunk.to(device)
        chunk.eval()
    return InferenceModel(cfg, LumosVocab(vocab_size=cfg.model.vocab_size), chunks, device, path)
