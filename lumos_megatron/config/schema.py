"""Typed configuration schema: one dataclass per concern, one docstring per field.

The string literal under each field is its documentation (a test checks every field has one).
Defaults give the reason for their value where it is not obvious. Fields with a fixed set of
values are typed ``Literal[...]`` (the attention backends' names come from their registry);
``lumos_megatron.config.validate`` checks those choices and cross-field consistency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from lumos_megatron.models.attention.backends import backend_names
from lumos_megatron.models.rope_variants import RopeVariant

AttentionBackendName = Literal[backend_names()]
"""A registered attention backend (``models.attention.backends``)."""
RecomputeGranularity = Literal["full", "selective"]
Precision = Literal["fp32", "bf16"]


@dataclass
class ModelConfig:
    """Shape of the Lumos decoder (a Chameleon/Llama-style GPT over the unified vocabulary)."""

    num_layers: int = 2
    """Number of transformer layers."""
    hidden_size: int = 64
    """Model width."""
    ffn_hidden_size: int = 176
    """SwiGLU inner width (each of the gate and up projections)."""
    num_attention_heads: int = 2
    """Number of query heads."""
    num_query_groups: Optional[int] = None
    """Number of key/value heads for GQA; None means as many as query heads (plain MHA)."""
    kv_channels: Optional[int] = None
    """Attention head dim; None means hidden_size // num_attention_heads. MM-RoPE needs a multiple of 32."""
    vocab_size: int = 129536
    """Unified vocabulary: 65,536 text ids + the visual codebook (64,000 Cosmos codes officially)."""
    max_position_embeddings: int = 32768
    """Longest sequence the model accepts (official stage 1: 32,768; stage 2: 65,536). Only a bound:
    RoPE is not scaled."""
    rotary_base: float = 10000.0
    """RoPE theta (the official class default; read rope_theta from an imported checkpoint)."""
    rope_variant: RopeVariant = "mm_rope"
    """Rotary variant: '1d' (plain RoPE), 'mm_rope' (interleaved 3D MM-RoPE) or '3d_contiguous'
    (3D RoPE without meta-groups, for the paper's ablation)."""
    rope_position_scale: Optional[List[int]] = None
    """[t, h, w]: the factors that scale a visual token's latent (frame, row, column) indices
    before P0 is added (3D variants). None: the video tokenizer's compression, 4 x 8 x 8 for every
    tokenizer this project reads (Cosmos DV4x8x8, the official values, and our FSQ), so positions
    count RGB frames and pixels. Set it for the paper's open question (other resolutions or
    durations); a trained model must keep the scale it was trained with."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon of the block and final norms (official rms_norm_eps default)."""
    qk_layernorm: bool = True
    """QK-norm: LayerNorm with bias over head_dim, one gamma/beta shared by all heads (official)."""
    qk_layernorm_epsilon: float = 1e-5
    """QK LayerNorm epsilon; hard-coded to 1e-5 in the official model, independent of norm_epsilon."""
    init_method_std: float = 0.02
    """Std of the normal init of every weight matrix and embedding (HF initializer_range)."""
    attention_dropout: float = 0.0
    """Attention-probability dropout (official: 0)."""
    hidden_dropout: float = 0.0
    """Residual dropout (official: 0)."""
    add_bias_linear: bool = False
    """Biases on q/k/v/o and MLP projections (official attention_bias = mlp_bias = False)."""
    attention_backend: AttentionBackendName = "sdpa"
    """Core attention implementation: 'sdpa' (torch SDPA with a dense boolean mask; CPU and GPU,
    the only one that trains on CPU and the one context parallelism uses), 'flex' (FlexAttention
    with a frame-causal block mask that skips empty tiles; trains on CUDA, forward-only on CPU) or
    'te_bias' (TransformerEngine fused attention with the mask as a post-scale bias; needs TE)."""
    tie_embeddings: bool = False
    """Share the input embedding and the LM head. Lumos-1 unties them."""
    recompute_granularity: Optional[RecomputeGranularity] = None
    """Activation recompute: None (keep all activations), 'full' (recompute whole decoder layers
    in backward; the official recipe does this on every layer) or 'selective' (recompute only the
    core attention, whose activations grow with s^2 on the SDPA math path). Non-reentrant, so it
    works with every attention backend (a FlexAttention BlockMask included)."""
    recompute_num_layers: Optional[int] = None
    """With 'full': recompute only the first N layers of each model chunk (pipeline stage or
    virtual stage); None recomputes them all. Fewer trades memory back for speed."""


@dataclass
class ParallelConfig:
    """How the model and the batch are split across processes. DP is what is left of the world."""

    tensor_model_parallel_size: int = 1
    """TP: split each layer's matrices across this many ranks (Megatron --tensor-model-parallel-size)."""
    pipeline_model_parallel_size: int = 1
    """PP: split the layers into this many stages (Megatron --pipeline-model-parallel-size)."""
    virtual_pipeline_model_parallel_size: Optional[int] = None
    """VPP: model chunks per pipeline rank for the interleaved 1F1B schedule; None disables."""
    context_parallel_size: int = 1
    """CP: split each sequence across this many ranks (Megatron --context-parallel-size)."""
    sequence_parallel: bool = False
    """SP: shard norms/dropout activations along the sequence inside TP groups (needs TP > 1)."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state across data-parallel ranks (ZeRO-1)."""
    overlap_grad_reduce: bool = False
    """Overlap the data-parallel gradient reduction with the backward pass."""


@dataclass
class TrainConfig:
    """Optimisation and batch schedule."""

    micro_batch_size: int = 1
    """Samples per forward/backward on one data-parallel rank (Megatron --micro-batch-size)."""
    global_batch_size: int = 1
    """Samples per optimizer step over all data-parallel ranks; a multiple of micro_batch_size x DP
    (Megatron --global-batch-size). The quotient is the number of gradient-accumulation micro-batches."""
    train_iters: int = 10
    """Optimizer steps to run (the total, counting those of a resumed checkpoint)."""
    train_samples: Optional[int] = None
    """Alternative to train_iters (Megatron --train-samples): train on this many samples in total,
    i.e. ceil(train_samples / global_batch_size) steps; overrides train_iters when set."""
    exit_duration_in_mins: Optional[float] = None
    """Save (when checkpoint.save is set) and exit with status 0 once this many minutes of wall
    time have passed (Megatron --exit-duration-in-mins); lets a job end cleanly before a
    scheduler time limit. None: no limit."""
    hang_timeout_factor: float = 10.0
    """Hang watchdog: a step still running after this many times the median time of the recent
    steps (at least hang_timeout_min_s) counts as hung; every rank dumps the Python stacks of all
    its threads to stderr and exits with status 6 instead of waiting for the job's wall time.
    0 disables the watchdog. Raise it (or hang_timeout_min_s) when steps legitimately vary a lot,
    e.g. recompilation for new shapes under data.pad_to_multiple."""
    hang_timeout_s: float = 1800.0
    """Hang watchdog: the fixed limit of the first 5 steps of a process (compilation and warm-up,
    before a median exists) and of every evaluation and checkpoint load or save, in seconds."""
    hang_timeout_min_s: float = 60.0
    """Hang watchdog: the least limit of a step once the median applies, in seconds, so that a
    pause of a few seconds (garbage collection, a slow file system) does not end a run of short
    steps."""
    lr: float = 1e-4
    """Peak learning rate."""
    min_lr: float = 1e-4
    """Final learning rate; equal to lr gives the official constant schedule after warmup."""
    lr_warmup_iters: int = 0
    """Linear warmup from 0 over this many steps."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to every parameter as in the official recipe."""
    weight_decay_all_params: bool = True
    """Decay every parameter (official); false gives Megatron's usual no-decay on norms and biases."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.95
    """AdamW beta2 (official 0.95)."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    clip_grad: float = 4.0
    """Global gradient-norm clip (official 4.0); 0 disables."""
    seed: int = 0
    """Seed of parameter init, data order and every random stream (official: 0)."""
    eval_interval: int = 0
    """Evaluate on the validation split every N iterations (Megatron --eval-interval); 0: never."""
    eval_iters: int = 1
    """Global batches per evaluation (Megatron --eval-iters). The same validation samples and
    AR-DF masks are used at every evaluation, so the curve compares like with like."""
    precision: Precision = "fp32"
    """'fp32' or 'bf16' (bf16 weights with fp32 master weights; GPU)."""


@dataclass
class DataConfig:
    """Where batches come from."""

    seq_length: int = 128
    """Tokens per training sample (padded/truncated to this)."""
    mock: bool = True
    """Train on synthetic Lumos-layout video samples generated on the fly (no data files)."""
    data_path: List[str] = field(default_factory=list)
    """Pre-tokenized dataset directories (tools/pretokenize.py output), one path or weighted pairs
    'w1 p1 w2 p2' (Megatron --data-path); used when mock is False. In joint training, the videos."""
    split: str = "99,1,0"
    """Train/valid/test proportions of every dataset (Megatron --split); the valid part feeds
    the periodic evaluation (train.eval_interval)."""
    image_data_path: List[str] = field(default_factory=list)
    """Joint image+video training (official stage 2): image datasets, same syntax as data_path.
    Non-empty (or mock_image) turns on alternating image and video optimizer steps."""
    mock_image: bool = False
    """Mock data: add a stream of 1-frame (image) mock samples for joint training."""
    image_micro_batch_size: int = 6
    """Joint training: micro-batch size of image steps (official --img_batch_size 6)."""
    image_global_batch_size: Optional[int] = None
    """Joint training: samples per image step over all DP ranks; None = image_micro_batch_size x
    the number of video micro-batches per step x DP (the official run: 6 per GPU)."""
    image_seq_length: Optional[int] = None
    """Joint training: padded length of image samples (~2k at 256p, ~4k at 384p); None =
    seq_length."""
    video_iters_per_image_iter: int = 1
    """Joint training: video steps after each image step (official --video_iter_per_img_iter 1:
    image, video, image, video, ...)."""
    streaming_manifest: Optional[str] = None
    """Streaming mode: decode and tokenize this manifest's videos inside the loader (GPU) instead of
    reading pre-tokenized shards; needs video_tokenizer and text_tokenizer."""
    video_tokenizer: Optional[str] = None
    """Video tokenizer spec (cosmos:DIR or fsq:CKPT.pt, as tools/pretokenize.py takes). Streaming
    mode encodes with it. Checkpoints record it (None: the one named by the pre-tokenized
    datasets' dataset.json), and lumos_megatron.generate decodes with it unless given
    --video-tokenizer."""
    text_tokenizer: Optional[str] = None
    """Text tokenizer spec (hf:tokenizer.json or sp:MODEL.model). Streaming mode encodes with it.
    Checkpoints record it (None: the one named by the datasets' dataset.json), and
    lumos_megatron.generate uses it unless given --text-tokenizer."""
    media_fps: float = 12.0
    """Streaming mode: sampled frame rate (official 12)."""
    media_duration: float = 2.0
    """Streaming mode: seconds per clip (2 s at 12 fps = the 7 latent frames training keeps)."""
    media_resolution: int = 256
    """Streaming mode: crop-size target (256 → 320x192, 352 → 448x256, 528 → 672x384 for 16:9)."""
    pad_to_multiple: Optional[int] = None
    """Pad each step to the smallest multiple of this that holds its longest sample (capped at
    the stream's seq_length) instead of always to seq_length. Every rank derives the same length
    from the global batch, so pipeline stages agree without shape exchange."""
    packing: bool = False
    """Concatenate each step's samples into sequences of at most seq_length tokens (first-fit
    decreasing), with attention restricted to each sample's own frame-causal mask and MM-RoPE
    positions restarting per sample, so padding costs nothing: every micro-batch is one packed
    sequence (train.micro_batch_size must be 1), and the sequences are spread over the
    data-parallel ranks to balance their work. Losses and gradients equal the unpacked run's."""
    length_grouped: bool = False
    """Length-grouped sampling (the official sampler): inside windows of global batch size x
    length_group_window consecutive samples, sort by length, cut into global batches and shuffle
    their order by seed, so each step holds samples of similar length. Deterministic; exact resume."""
    length_group_window: int = 500
    """Global batches per length-grouping window (the official 500)."""
    mock_layouts: List[List[int]] = field(default_factory=list)
    """Mock data of mixed shapes: a list of [latent_frames, H_l, W_l]; each sample draws one
    (deterministically from the seed and its index; 1 frame = an image). Empty: every sample is
    mock_frames x mock_grid."""
    mock_frames: int = 2
    """Mock data: latent frames per sample."""
    mock_grid: List[int] = field(default_factory=lambda: [4, 4])
    """Mock data: latent grid [H_l, W_l] of each frame (multiples of 4, as 32-px size tokens need)."""
    mock_text_tokens: int = 16
    """Mock data: caption length in tokens."""
    mock_classes: int = 0
    """Mock data: 0 draws every sample's codes i.i.d. from one Zipf distribution over the codebook,
    which a model learns within a few steps. k > 0 gives each sample one of k classes, written as
    its first caption token, and draws its codes from that class's own Zipf distribution (the Zipf
    weights over a class-specific permutation of the codebook): a model has k distributions to
    learn, so the loss keeps falling with model size and data (the CPU scaling mini-ladder)."""


@dataclass
class ARDFConfig:
    """AR-DF training objective (temporal tube masking)."""

    enabled: bool = True
    """Train with AR-DF tube masking and the visual-only loss (official); off means a plain
    next-token CE over the full vocabulary (a baseline, not the Lumos objective)."""
    min_mask_ratio: float = 0.7
    """Lower clamp of the cosine mask ratio r = max(cos(pi*u/2), min) (official 0.7)."""
    mask_pattern: Literal["tube", "random"] = "tube"
    """``tube`` (official): one spatial pattern repeated in every latent frame. ``random`` (the
    paper's ablation): an independent pattern per latent frame, with the same ratio and the same
    first frame, drawn from the same per-sample random key, so the arms differ only in the
    pattern (random leaks each frame's content through the others' unmasked positions)."""
    cfg_drop_prob: float = 0.1
    """Probability of dropping the text condition of an eligible sample (official 0.1)."""
    max_latent_frames: int = 7
    """Keep only the first N latent frames of each video (official: 7, i.e. 25 RGB frames)."""
    rewrite_duration_fps: bool = True
    """Rewrite the video prefix duration/fps tokens to video_duration/video_fps (images: 1, 1)."""
    video_duration: int = 2
    """Duration (s) written into video prefixes (official: 2 for the 7 kept latent frames)."""
    video_fps: int = 12
    """Frame rate written into video prefixes (official: 12)."""
    loss_chunk_rows: int = 1024
    """Rows per chunk of the fused visual cross-entropy (peak temporary: rows x visual vocab / TP)."""
    report_frames: int = 8
    """Latent frames 0..N-1 get their own loss/frame_k scalar (all frames count in lm loss)."""


@dataclass
class CheckpointConfig:
    """Saving and loading (torch_dist via megatron.core.dist_checkpointing)."""

    save: Optional[str] = None
    """Directory to save checkpoints to (Megatron --save)."""
    load: Optional[str] = None
    """Directory to resume from (Megatron --load)."""
    save_interval: int = 0
    """Save every N iterations; 0 saves only at the end when save is set. A save also happens
    on SIGTERM/SIGUSR1 and when train.exit_duration_in_mins runs out."""
    keep_last: int = 2
    """Keep only the newest N checkpoints under save (older ones are deleted after each save);
    0 keeps all. The default 2 keeps one good checkpoint in reserve should the newest be damaged."""
    load_step: Optional[int] = None
    """Resume from iter_<load_step> under load instead of the one latest_checkpointed_iteration.txt
    names (Megatron --ckpt-step)."""
    finetune: bool = False
    """Load only the model weights from load (Megatron --finetune): fresh optimizer and LR
    schedule, iteration and data position 0. How training starts from an imported checkpoint
    (a checkpoint holding weights only is always loaded this way)."""
    verify: Literal["full", "size", "none"] = "full"
    """What is checked against a checkpoint's manifest before it is loaded: 'full' every file's
    size and SHA-256 (split over the ranks), 'size' the sizes only, 'none' nothing."""
    fallback: bool = True
    """When the checkpoint to resume fails verification, load the newest older one that passes
    (with a loud warning) instead of stopping. Not for an explicit load_step."""
    max_save_failures: int = 3
    """Stop (exit 5) after this many periodic saves in a row failed; fewer failures are logged and
    training goes on. The final and signal-driven saves are never retried."""
    stale_owner_after_s: float = 900.0
    """Another run's claim on the save directory counts as stale (and is taken over) when its
    heartbeat is older than this; a dead PID on the same host or an earlier allocation of the same
    SLURM job is stale at once."""


@dataclass
class LoggingConfig:
    """What is reported, and where."""

    log_interval: int = 1
    """Print a log line every N iterations."""
    tensorboard_dir: Optional[str] = None
    """Write TensorBoard scalars here (Megatron --tensorboard-dir); None disables."""
    peak_tflops: float = 0.0
    """Per-device peak TFLOP/s that MFU divides by; 0 = known GPU's dense bf16 peak, or a
    measured fp32 GEMM rate on CPU."""


@dataclass
class LumosConfig:
    """A whole run: the resolved form of a YAML recipe plus command-line overrides."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Parallel layout."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data."""
    ardf: ARDFConfig = field(default_factory=ARDFConfig)
    """AR-DF objective."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Logging."""


def head_dim(cfg: LumosConfig) -> int:
    """Attention head dim implied by the model config (``kv_channels``, else hidden / heads)."""
    m = cfg.model
    return m.kv_channels if m.kv_channels is not None else m.hidden_size // m.num_attention_heads


DEFAULT_ROPE_POSITION_SCALE = (4, 8, 8)
"""The video tokenizers' compression (time, height, width): Cosmos DV4x8x8 and our FSQ."""


def rope_position_scale(cfg: LumosConfig) -> tuple:
    """``model.rope_position_scale`` as a (t, h, w) tuple, the tokenizer's compression when unset."""
    scale = cfg.model.rope_position_scale
    return tuple(int(v) for v in scale) if scale is not None else DEFAULT_ROPE_POSITION_SCALE
