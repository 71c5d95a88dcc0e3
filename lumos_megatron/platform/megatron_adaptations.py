"""Index of every adaptation lumos_megatron makes to megatron-core.

One entry per thing we do to, around or instead of megatron-core: stubs for the CPU, monkeypatches,
source rewrites, overrides of private methods, components we replace with our own, and fixes for
megatron bugs. Each entry names our code (``where``, an importable ``"module:qualname"``), what it
touches in megatron-core (``target``, with file:line in the checked version where known) and why
(``works_around``). ``docs/megatron.md`` explains the entries in prose; its final table is this
index.

The index is checked against the installed megatron-core by ``tests/unit/test_megatron_adaptations.py``:
the test fails when the installed version differs from :data:`CHECKED_MEGATRON_CORE_VERSION`. On an
upgrade, re-check every entry (does the target still exist, at which line, is the workaround still
needed?) and ``docs/megatron.md``, update ``checked_on``, then bump the constant.

Importing this module imports nothing from megatron (nor torch): ``where`` strings are resolved only
on request (:meth:`MegatronAdaptation.resolve`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Dict, Literal, Optional, Tuple

CHECKED_MEGATRON_CORE_VERSION = "0.16.1"
"""The megatron-core release every entry below was checked against (targets, line numbers, need)."""

AdaptationKind = Literal["cpu-stub", "source-rewrite", "monkeypatch", "private-override", "replacement",
                         "bug-fix"]
"""How an adaptation touches megatron-core:

- ``cpu-stub``: a CUDA entry point answered (or forbidden) for a CPU-only process;
- ``source-rewrite``: a megatron function re-defined from its own source with textual edits;
- ``monkeypatch``: a megatron module attribute or function replaced at run time;
- ``private-override``: a private megatron method or module global overridden by our code;
- ``replacement``: a megatron component, default or helper we do not use, with ours in its place;
- ``bug-fix``: a correction of megatron behaviour that is wrong for us (crash or silently wrong).
"""

_MODULE_PREFIX = "lumos_megatron."


@dataclass(frozen=True)
class MegatronAdaptation:
    """One adaptation of megatron-core."""

    name: str
    """Short unique identifier (kebab-case), e.g. ``"gloo-tagged-pipeline-p2p"``."""

    where: str
    """Our code that implements it, as ``"module:qualname"``; ``importlib.import_module(module)``
    followed by ``getattr`` over the dotted qualname yields the object."""

    target: str
    """What it touches in megatron-core: module path, function or class, and file:line in the
    ``checked_on`` version where known (paths relative to the ``megatron/core`` package)."""

    works_around: str
    """Why: the megatron behaviour that makes the adaptation necessary, in one or two sentences."""

    kind: AdaptationKind
    """How it touches megatron-core; see :data:`AdaptationKind`."""

    checked_on: str = CHECKED_MEGATRON_CORE_VERSION
    """The megatron-core version this entry (need, target, line numbers) was last verified on."""

    @property
    def module(self) -> str:
        """The importable module part of ``where``."""
        return self.where.split(":", 1)[0]

    @property
    def qualname(self) -> str:
        """The attribute path part of ``where`` (dotted for class members)."""
        return self.where.split(":", 1)[1]

    def resolve(self) -> Any:
        """Import ``module`` and return the object ``qualname`` names (imports megatron)."""
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj


def installed_megatron_core_version() -> Optional[str]:
    """Version of the installed ``megatron-core`` distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        return None


def _entry(name: str, where: str, target: str, works_around: str, kind: AdaptationKind) -> MegatronAdaptation:
    return MegatronAdaptation(name=name, where=_MODULE_PREFIX + where, target=target,
                              works_around=works_around, kind=kind)


ADAPTATIONS: Tuple[MegatronAdaptation, ...] = (
    # ---------------------------------------------------------------- CPU compatibility (docs §4)
    _entry(
        "cpu-torch-cuda-stubs",
        "platform.cpu_compat:_stub_torch_cuda",
        "torch.cuda.{current_device, synchronize, empty_cache, get_rng_state, set_rng_state, "
        "manual_seed} as called by distributed/param_and_grad_buffer.py:800/806, "
        "tensor_parallel/mappings.py:91/141/181, pipeline_parallel/p2p_communication.py:313/321/398 "
        "and tensor_parallel/random.py:235-240/422",
        "Megatron allocates grad buffers and communication tensors on torch.cuda.current_device() and "
        "seeds its RNG tracker through torch.cuda, which fail without CUDA; the stubs answer with the "
        "CPU device and the CPU default generator.",
        "cpu-stub",
    ),
    _entry(
        "cpu-rng-tracker-state",
        "platform.cpu_compat:_patch_rng_tracker",
        "tensor_parallel/random.py:41 _get_cuda_rng_state and :72 _set_cuda_rng_state",
        "The model-parallel RNG tracker reads and writes torch.cuda.default_generators, which do not "
        "exist on CPU; the tracker instead swaps the state of the one CPU generator.",
        "monkeypatch",
    ),
    _entry(
        "cpu-torch-device-proxy",
        "platform.cpu_compat:_install_torch_proxies",
        "module-global `torch` of pipeline_parallel/schedules.py (418 autocast, 596/983/2138), "
        "optimizer/optimizer.py (473/481/485/907), optimizer/clip_grads.py (90/103/115/174/207), "
        "utils.py:1207 and transformer/utils.py:35/40",
        "These modules create tensors with a literal device='cuda' (and torch.autocast('cuda')); a "
        "proxy of torch whose factory functions map CUDA devices to CPU is installed as their torch.",
        "monkeypatch",
    ),
    _entry(
        "cpu-tensor-type-checks",
        "platform.cpu_compat:_rewrite_type_checks",
        "optimizer/clip_grads.py:138 clip_grad_by_total_norm_fp32 (check at :167); "
        "optimizer/optimizer.py:626 Float16OptimizerWithFloat16Params.__init__ (:671/:690); "
        "optimizer/distrib_optimizer.py:307 DistributedOptimizer._build_model_and_main_param_groups "
        "(:361/:420) and :459 DistributedOptimizer.__init__ (:582)",
        "The optimizers accept parameters only if tensor.type() equals a 'torch.cuda.*Tensor' string, "
        "rejecting CPU tensors; the functions are re-executed from their source with the CPU type names.",
        "source-rewrite",
    ),
    _entry(
        "gloo-tagged-pipeline-p2p",
        "platform.cpu_compat:_tagged_p2p_ops",
        "pipeline_parallel/p2p_communication.py:16 _batched_p2p_ops (selected at :355 with "
        "batch_p2p_comm)",
        "Megatron posts pipeline sends and receives without tags; gloo matches messages by (peer, tag) "
        "in posting order, so when the previous and next stage are the same process an activation and "
        "a gradient of equal shape are swapped silently. Our version tags each direction.",
        "bug-fix",
    ),
    _entry(
        "strict-cpu-mode",
        "platform.cpu_compat:_forbid_other_cuda_calls",
        "every public torch.cuda function not stubbed or known to be safe (LUMOS_STRICT_CPU=1)",
        "A new CUDA hard-code in megatron (or in our code) would otherwise fail far from its cause or "
        "not at all; strict mode makes any other torch.cuda call raise with its name, so the "
        "distributed tests prove the stub list is complete.",
        "cpu-stub",
    ),
    # ------------------------------------------------------------------- checkpointing (docs §5)
    _entry(
        "distopt-empty-state-assert",
        "checkpoint.dist_optimizer_fixes:prime_empty_state",
        "optimizer/distrib_optimizer.py:628 DistributedOptimizer.state_dict (assert at :642; uses "
        "_init_optimizer_states_with_dummy_values, :1137)",
        "With torch Adam (no Apex/TE) state_dict() asserts exactly one 'step' value, which a fresh "
        "optimizer does not have (every load, and a save before the first step); we fill the state "
        "with megatron's dummy initialisation under zero lr and weight decay, then zero it.",
        "bug-fix",
    ),
    _entry(
        "distopt-load-into-leaf-params",
        "checkpoint.dist_optimizer_fixes:apply_load_fix",
        "optimizer/distrib_optimizer.py:911 DistributedOptimizer._set_main_param_and_optimizer_states "
        "(copy at :940)",
        "The fully-reshardable load copies into main params that are views of leaf parameters outside "
        "no_grad, and requires a 'step' entry the loader dropped; a wrapper runs it under no_grad and "
        "supplies the current step.",
        "bug-fix",
    ),
    _entry(
        "distopt-shared-adam-step",
        "checkpoint.dist_optimizer_fixes:unshare_steps",
        "optimizer/distrib_optimizer.py:817-823 DistributedOptimizer.load_state_dict",
        "Without Apex/TE, load_state_dict gives every parameter the same 'step' tensor and torch Adam "
        "increments it in place once per parameter, so bias correction runs ahead after a resume and "
        "the loss silently diverges; each parameter gets its own step again.",
        "bug-fix",
    ),
    _entry(
        "distopt-fully-reshardable-format",
        "checkpoint.sharded:DISTOPT_FORMAT",
        "metadata['distrib_optim_sharding_type'] of DistributedOptimizer.sharded_state_dict "
        "(optimizer/distrib_optimizer.py:107, :866-878); dist_checkpointing/mapping.py:134",
        "The default 'fully_sharded_model_space' format fails to save (ShardedTensor.flattened_range is "
        "not supported) and 'dp_reshardable' cannot change TP/PP; 'fully_reshardable' reshards across "
        "all three.",
        "replacement",
    ),
    _entry(
        "distopt-gather-over-gloo",
        "checkpoint.sharded:sharding_metadata",
        "metadata['distrib_optim_fully_reshardable_mem_efficient'] "
        "(optimizer/distrib_optimizer.py:1089 send_tensor.cuda())",
        "The default fully-reshardable gather moves the optimizer state to CUDA and gathers it on DP "
        "rank 0; on CPU we select the memory-efficient variant, which exchanges over the gloo DP group.",
        "replacement",
    ),
    _entry(
        "unwrapped-sharded-state-dict",
        "checkpoint.sharded:unwrap",
        "distributed/distributed_data_parallel.py DDP and Float16Module, which inherit "
        "transformer/module.py:58 MegatronModule.sharded_state_dict",
        "The wrappers' inherited sharded_state_dict prefixes every key with 'module.', so keys stop "
        "matching on load; we always take the state dict of the bare model.",
        "replacement",
    ),
    _entry(
        "streaming-torch-dist-writer",
        "conversion.torch_dist_io:TorchDistWriter",
        "dist_checkpointing/serialization.py save with strategies/torch.py TorchDistSaveShardedStrategy: "
        "ShardedTensor keys (transformer_block.py stacks layers on a leading axis), ShardedObject "
        "bytes (torch.py:320-324 torch.save of a list), common.pt (strategies/common.py:24) and "
        "metadata.json (core.py:76 save_config)",
        "megatron's save needs every tensor of the state dict in memory inside a process group; the "
        "checkpoint converter writes the same torch_dist layout one chunk at a time with its own DCP "
        "planner, so it depends on that layout staying as it is.",
        "replacement",
    ),
    _entry(
        "writer-results-queue-signal-safe",
        "checkpoint.writer_process:start_writer_results_queue",
        "dist_checkpointing/strategies/filesystem_async.py:48-56 module global _results_queue and "
        "_get_write_results_queue",
        "The writer's results queue lives in a spawned Manager process that sits in the rank's process "
        "group, so the SIGTERM/SIGUSR1 meant for the ranks kills it and fails the save the signal "
        "asked for; we create the queue ourselves in a manager that ignores those signals.",
        "private-override",
    ),
    # --------------------------------------------------------------------------- model (docs §1-3)
    _entry(
        "mm-rope-through-mrope-dispatch",
        "models.lumos_model:LumosModel.__init__",
        "models/gpt/gpt_model.py:192-203 (construction of MultimodalRotaryEmbedding) and :386-392 "
        "(the 'mrope' call in GPTModel._preprocess)",
        "Megatron's own 'mrope' module needs config.mrope_section, allocates on CUDA "
        "(models/common/embeddings/rotary_pos_embedding.py:297) and has no MM-RoPE layout; we build with "
        "'none' and then set position_embedding_type='mrope' and our rotary module on the instance.",
        "replacement",
    ),
    _entry(
        "fused-visual-ce-postprocess",
        "models.lumos_model:LumosModel._postprocess",
        "models/gpt/gpt_model.py:559 GPTModel._postprocess (output layer at :685, "
        "compute_language_model_loss at :714)",
        "megatron-core 0.16 has no fused linear + cross-entropy and always materialises "
        "[tokens x vocab/TP] logits; the override computes the AR-DF visual loss chunk by chunk, on "
        "the loss rows LumosModel.forward holds for it (GPTModel.forward passes no extra arguments "
        "on); from 0.18 the public output_processor hook of GPTModel.forward can replace it.",
        "private-override",
    ),
    _entry(
        "layout-independent-init",
        "models.init:initialize_lumos_weights",
        "tensor_parallel/layers.py:135 _initialize_affine_weight_gpu and :149 "
        "_initialize_affine_weight_cpu (disabled with TransformerConfig.perform_initialization=False)",
        "Megatron initialises each TP shard and pipeline stage from its own RNG stream, so weights "
        "depend on the parallel layout; we draw each full tensor from a generator keyed by its global "
        "name and keep this rank's shard.",
        "replacement",
    ),
    _entry(
        "tensor-parallel-param-attributes",
        "models.init:mark_tensor_parallel_params",
        "tensor_parallel/layers.py:101 set_tensor_model_parallel_attributes, called for weights only "
        "inside the initialisers (:137, :170) that perform_initialization=False skips (:855, :877)",
        "Without megatron's initialisers the TP weights carry no tensor_model_parallel/partition_dim "
        "attributes, so the grad norm treats their shards as replicas and drops those of TP ranks > 0; "
        "we set the attributes.",
        "bug-fix",
    ),
    _entry(
        "own-layer-spec",
        "models.layer_spec:lumos_layer_spec",
        "models/gpt/gpt_layer_specs.py:306 get_gpt_layer_local_spec",
        "The stock local spec ties the QK-norm to the block norm type, uses DotProductAttention and "
        "WrappedTorchNorm, and its signature changes across releases; we construct the ModuleSpec "
        "ourselves.",
        "replacement",
    ),
    _entry(
        "arbitrary-attn-mask-type",
        "models.layer_spec:lumos_layer_spec",
        "transformer/enums.py:56 AttnMaskType.arbitrary as the SelfAttention attn_mask_type "
        "(fusions/fused_softmax.py:264/285 causal path)",
        "With the 'causal' tag megatron's fused softmax (and TE) apply their own causal mask and ignore "
        "the one passed in; 'arbitrary' tells every core attention that the passed mask is the mask.",
        "replacement",
    ),
    _entry(
        "sdpa-core-attention",
        "models.attention.sdpa:SDPACoreAttention",
        "transformer/dot_product_attention.py DotProductAttention (asserts CP == 1 at :59 and no packed "
        "sequences at :154); fusions/fused_softmax.py:285",
        "The local core attention ignores the mask on its fused causal path, rejects context "
        "parallelism and packed sequences, and allocates through CUDA-only buffers (utils.py:631); "
        "ours runs torch SDPA with the dense mask on CPU and GPU.",
        "replacement",
    ),
    _entry(
        "flex-core-attention",
        "models.attention.flex:FlexCoreAttention",
        "core_attention of the SelfAttention spec (transformer/attention.py core-attention call)",
        "Megatron has no block-sparse kernel for arbitrary masks; FlexAttention with a frame-causal "
        "BlockMask skips empty tiles on GPU.",
        "replacement",
    ),
    _entry(
        "te-bias-core-attention",
        "models.attention.te_bias:TEBiasCoreAttention",
        "extensions/transformer_engine.py TEDotProductAttention (forwards attn_mask_type.name at "
        ":1322/:1406, attention_bias as post_scale_bias at :1387)",
        "TE's fused and flash kernels do not take an arbitrary boolean mask; we pass the mask as an "
        "additive post-scale bias with no TE mask, TE's documented route for arbitrary masks.",
        "replacement",
    ),
    _entry(
        "all-gather-kv-cp-attention",
        "models.attention.context_parallel:AllGatherCPCoreAttention",
        "context parallelism of TEDotProductAttention (the only CP-capable core attention; "
        "transformer/dot_product_attention.py:59)",
        "Megatron's CP is TE-only and TE's CP kernels accept only causal or no masks; ours all-gathers "
        "keys and values over the CP group and attends with the local query rows of the full mask.",
        "replacement",
    ),
    _entry(
        "cp-batch-slicing",
        "models.cp_sharding:slice_batch_for_cp",
        "Megatron-LM get_batch_on_this_cp_rank and models/common/embeddings/rope_utils.py:48-64 "
        "get_pos_emb_on_this_cp_rank",
        "The batch helper is not in megatron-core and the RoPE slicer allocates pinned CUDA memory; we "
        "slice tokens, labels, positions and mask rows per CP rank on the data side in the same "
        "load-balanced order.",
        "replacement",
    ),
    _entry(
        "sequence-parallel-rmsnorm",
        "models.norms:RMSNorm",
        "transformer/torch_norm.py:9 WrappedTorchNorm (asserts no sequence parallelism at :32); "
        "distributed/finalize_model_grads.py:353-355",
        "The local-spec norm refuses sequence parallelism; ours flags its weight sequence_parallel so "
        "finalize_model_grads sums its gradient over TP, and follows Chameleon's cast order.",
        "replacement",
    ),
    _entry(
        "head-shared-qk-layernorm",
        "models.norms:HeadSharedLayerNorm",
        "q_layernorm/k_layernorm of SelfAttention; distributed/finalize_model_grads.py:353-355 "
        "(name-based TP sum of q/k-layernorm grads)",
        "Lumos needs a LayerNorm with bias shared across heads and its own epsilon, which the stock "
        "QK-norm choices do not give; it relies on megatron summing q/k_layernorm grads over TP by "
        "parameter name.",
        "replacement",
    ),
    _entry(
        "full-recompute-non-reentrant",
        "models.recompute:RecomputedTransformerLayer",
        "TransformerConfig.recompute_granularity='full' → transformer/transformer_block.py:446 "
        "_checkpointed_forward → tensor_parallel/random.py:496 CheckpointFunction (save_for_backward "
        "at :528)",
        "Megatron's reentrant checkpoint passes every argument through save_for_backward, which "
        "rejects the FlexAttention BlockMask; we use torch's non-reentrant checkpoint and replay the "
        "TP RNG tracker ourselves.",
        "replacement",
    ),
    _entry(
        "selective-recompute-core-attention",
        "models.recompute:recomputed_core_attention",
        "recompute_granularity='selective' with 'core_attn' → transformer/attention.py:381 "
        "_checkpointed_attention_forward",
        "The same reentrant CheckpointFunction is used for selective recompute; our core-attention "
        "subclasses recompute themselves with the non-reentrant checkpoint.",
        "replacement",
    ),
    _entry(
        "kv-cache-core-attention",
        "inference.kv_cache:CachedCoreAttention",
        "inference/contexts/static_context.py StaticInferenceContext and the dynamic engine "
        "(inference/contexts/dynamic_context.py); swapped in for the duration of a cached forward: "
        "transformer/attention.py SelfAttention.core_attention (called at :1150)",
        "The static context keeps only last-token logits and grows one position at a time; the "
        "dynamic engine is causal with 1-D RoPE. AR-DF decoding needs every code logit of a frame "
        "block and frame-causal attention over cache + block with a cache that drops the block each "
        "step, so megatron's own layers run on the new tokens and only core attention reads the cache.",
        "replacement",
    ),
    # ----------------------------------------------------- planner on fake CUDA (docs/planning.md)
    _entry(
        "plan-fake-cuda-device-guard",
        "plan.fake_device:build_library",
        "torch's C++ device guard and CUDA hooks (c10::impl::DeviceGuardImplInterface for CUDA, "
        "at::CUDAHooksInterface); not megatron-core",
        "A CPU-only torch has no CUDA device guard and CUDA hooks that say 'no CUDA', so autograd aborts "
        "on the first backward over fake 'cuda' tensors; a 40-line C++ library, preloaded into planner "
        "workers only, registers a fake guard and hooks.",
        "cpu-stub",
    ),
    _entry(
        "plan-fake-torch-cuda-answers",
        "plan.fake_mode:_cuda_stubs",
        "torch.cuda.{is_available, current_device, get_device_properties, get_rng_state, ...} as "
        "called by megatron (tensor_parallel/layers.py, distributed/param_and_grad_buffer.py, "
        "pipeline_parallel/p2p_communication.py) and by our code",
        "In a planner worker megatron must take its GPU code paths, so torch.cuda says one device of "
        "the planned GPU's memory exists (the CPU stubs of cpu-torch-cuda-stubs say the opposite).",
        "cpu-stub",
    ),
    _entry(
        "plan-fake-tensor-device-init",
        "plan.fake_mode:_patch_fake_tensor_device_init",
        "torch._subclasses.fake_tensor.FakeTensorMode.avoid_device_init; not megatron-core",
        "With torch.cuda.is_available() True, FakeTensorMode initialises the CUDA runtime for "
        "torch.tensor(...), which a CPU build lacks; the property keeps it on its CPU-build path.",
        "monkeypatch",
    ),
    _entry(
        "plan-eager-flex",
        "plan.fake_mode:_eager_flex_everywhere",
        "our models.attention.flex compiled builders; torch.nn.attention.flex_attention."
        "_FLEX_ATTENTION_DISABLE_COMPILE_DEBUG; not megatron-core",
        "Dynamo refuses to compile under a dispatch mode ('found no compiled frames'); the trace calls "
        "flex's higher-order op directly, whose fake rule yields the fused kernel's output and "
        "logsumexp shapes.",
        "monkeypatch",
    ),
    _entry(
        "plan-rng-tracker-state",
        "plan.fake_mode:_patch_rng_tracker",
        "tensor_parallel/random.py:41 _get_cuda_rng_state and :72 _set_cuda_rng_state",
        "megatron's CUDA RNG tracker reads torch.cuda.default_generators, empty without CUDA; a CPU state "
        "stands in (values are never used on fake tensors).",
        "monkeypatch",
    ),
    _entry(
        "plan-gloo-side-groups",
        "plan.fake_mode:_route_gloo_groups",
        "parallel_state.py:408/871/900/960 new_group(backend='gloo') side groups",
        "ProcessGroupGloo cannot be built on the fake store ('Not implemented'); the side groups get the "
        "fake backend like every other group.",
        "monkeypatch",
    ),
    _entry(
        "plan-local-all-gather-object",
        "plan.fake_mode:_all_gather_object_locally",
        "optimizer/__init__.py:181 torch.distributed.all_gather_object of the parameter-group keys",
        "all_gather_object pickles through .numpy(), which fake tensors refuse; every rank's keys are "
        "this rank's (true of the symmetric layouts the planner traces).",
        "monkeypatch",
    ),
    _entry(
        "plan-grad-buffer-no-coalescing",
        "plan.fake_mode:_NoCoalescing",
        "distributed/param_and_grad_buffer.py:13 (import) and :274 _coalescing_manager around the "
        "bucket reductions",
        "torch's fake process-group backend has no allreduce_coalesced_; the bucket collectives run one "
        "by one (same tensors, same bytes) and the handle waits for nothing.",
        "monkeypatch",
    ),
    _entry(
        "plan-grad-norm-without-multi-tensor",
        "plan.fake_mode:_grad_norm_without_item",
        "optimizer/clip_grads.py:51 get_grad_norm_fp32 (as imported by optimizer/optimizer.py and "
        "optimizer/distrib_optimizer.py)",
        "Without apex/TE the multi-tensor L2-norm fallback reads tensor values on the host, which fake "
        "tensors have none of; the replacement keeps the collectives and the final host read (audited).",
        "monkeypatch",
    ),
    _entry(
        "plan-skip-weight-init",
        "plan.fake_mode:_skip_weight_init",
        "our models.init.initialize_lumos_weights after megatron builds the layers; not megatron-core",
        "Weight values are irrelevant to a trace, and the initialiser's full unsharded temporaries are "
        "freed before any real step: skipped so they do not count as step memory.",
        "monkeypatch",
    ),
    _entry(
        "plan-fused-adam",
        "plan.fake_mode:fused_adam",
        "optimizer/__init__.py:360 adam_cls = torch.optim.AdamW (the fallback without TE/apex)",
        "A GPU install runs TE's or apex's in-place FusedAdam; torch's default foreach AdamW would add a "
        "transient the size of all parameters. The trace and its CPU validation use torch's fused AdamW, "
        "in place like FusedAdam.",
        "replacement",
    ),
    # ------------------------------------------------------------------------------- training
    _entry(
        "config-owned-lr-schedule",
        "training.optim:build_scheduler",
        "optimizer_param_scheduler.py:135-136 (use_checkpoint_opt_param_scheduler, "
        "override_opt_param_scheduler) and :312 _check_and_set",
        "By default a resumed scheduler asserts that every schedule parameter equals the checkpoint's, "
        "so e.g. a longer train_iters cannot resume; we let the run's configuration define the "
        "schedule's shape and take only its position from the checkpoint.",
        "replacement",
    ),
    # ----------------------------------------------------------------------------------- data
    _entry(
        "pretokenized-indexed-shards",
        "data.indexed:PretokenizedDataset",
        "datasets/gpt_dataset.py:101 GPTDataset and datasets/blended_megatron_dataset_builder.py:29 "
        "BlendedMegatronDatasetBuilder (we keep datasets/indexed_dataset.py storage)",
        "GPTDataset packs fixed-length token windows with causal masks and 1D positions; Lumos samples "
        "are whole videos whose MM-RoPE positions and frame masks are rebuilt per sample.",
        "replacement",
    ),
    _entry(
        "blend-with-helpers-cpp",
        "data.blend:BlendedStream",
        "datasets/blended_dataset.py BlendedDataset (:168); the compiled "
        "datasets/helpers_cpp build_blending_indices (helpers.cpp:77)",
        "BlendedDataset is tied to MegatronDataset splits and cache files; we call megatron's compiled "
        "blending-index helper directly for an endless weighted blend of our streams.",
        "replacement",
    ),
)
"""Every adaptation of megatron-core, grouped by area (see ``docs/megatron.md``)."""


def adaptations_by_name() -> Dict[str, MegatronAdaptation]:
    """The index keyed by entry name."""
    return {a.name: a for a in ADAPTATIONS}
