"""One ``lumos_megatron.generate`` run: set-up checks, the share of the prompt set of this rank's
data-parallel group (``prompt_sharding``), prompt preparation, batched generation, and the
outputs of every sample (MP4, GIF, first-frame PNG, JSON with settings and tokens) and of the run
(``skipped.jsonl``, ``index.jsonl``).

Every sample JSON records its *determinants* (everything its tokens depend on: checkpoint, tokenizers,
task, prompt, conditioning image content, seed, frame geometry, sampler settings, precision, devices)
and their sha256 (``determinants_hash``). A re-run into the same ``--out`` skips a sample whose hash
matches (resume) and refuses, before generating anything, one whose hash differs, unless
``--overwrite`` is given: stale samples are never mixed silently with new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from lumos_megatron.inference.prompt_file import PromptRecord, SkippedPrompt, read_prompt_file
from lumos_megatron.inference.prompt_sharding import RunGroups, balance_samples, write_index
from lumos_megatron.inference.tasks import (
    TASK_DEFAULTS,
    check_fits,
    conditioning_frame,
    conditioning_frame_size,
    frame_size,
    latent_frame_count,
    latent_grid,
    task_prompt_ids,
    video_codes,
)
from lumos_megatron.vocab import frame_block_length


def _with_load_hint(err: BaseException) -> str:
    """The error, plus how to pick another checkpoint with this command's only flag for it."""
    if getattr(err, "earlier_step", False):
        return f"{err}; pass an older iter_* directory as --load"
    return str(err)


class NoSpaceForOutput(RuntimeError):
    """The output directory ran out of space while a sample was written (its files removed)."""


def _raise_if_no_space(err: OSError, base: Path, need: int) -> None:
    """On a full disk, remove the sample's partial files and raise ``NoSpaceForOutput`` (one line);
    otherwise return (the caller re-raises)."""
    from lumos_megatron.platform.disk_space import is_no_space, no_space_message

    if not is_no_space(err):
        return
    for partial in (base.with_suffix(".mp4"), base.with_suffix(".gif"), base.with_suffix(".png"),
                    base.with_name(f".{base.name}.json.tmp")):
        partial.unlink(missing_ok=True)
    raise NoSpaceForOutput(f"{no_space_message(base.parent, need)} while writing {base.name}; its partial files "
                           "were removed, and a re-run resumes after the complete samples") from err


class GenerationSetupError(ValueError):
    """A run that cannot start (bad arguments, checkpoint, tokenizer, frame size): one line."""


class StaleSampleError(GenerationSetupError):
    """``--out`` holds a sample of the same name generated from other determinants."""


DETERMINANTS_FORMAT = 1
"""Version of the determinants' layout: a change of layout changes every hash on purpose."""

# Settings that the sampler documents (and tests) as not changing a sample's tokens, like the batch
# size and the data-parallel layout: a resume may change them without regenerating.
_TOKEN_NEUTRAL_SETTINGS = ("kv_cache", "batch_cfg")


@dataclass
class PreparedSample:
    """A prompt ready to generate."""

    record: PromptRecord
    prompt_ids: List[int]
    given_frames: List[List[int]]
    size: Tuple[int, int]
    """(width, height) in pixels."""
    determinants: Dict[str, Any] = field(default_factory=dict)
    """What the sample's tokens depend on (recorded in its JSON with their hash)."""


def _choose(value, default):
    return default if value is None else value


def file_sha256(path) -> Optional[str]:
    """sha256 hex of a file's bytes; None when it cannot be read (its sample is skipped anyway)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def determinants_hash(determinants: Dict[str, Any]) -> str:
    """sha256 hex of the determinants as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(determinants, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def changed_determinants(stored: Any, current: Dict[str, Any]) -> List[str]:
    """The keys (``sampler.cfg_scale``: one level into sections) whose values differ."""
    if not isinstance(stored, dict):
        return ["all (no readable determinants)"]
    changed = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            changed.append(key)
    return changed


def stored_sample_problem(path: Path, determinants: Dict[str, Any]) -> Optional[str]:
    """None when the sample JSON at ``path`` records these determinants; otherwise what differs."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__})"
    if not isinstance(info, dict) or "determinants_hash" not in info:
        return "written without a determinants hash"
    if info["determinants_hash"] == determinants_hash(determinants):
        return None
    changed = changed_determinants(info.get("determinants"), determinants)
    return "changed: " + (", ".join(changed) if changed else "determinants hash")


def _check_args(args, world_size: int) -> None:
    """Argument combinations that cannot work, before anything is loaded."""
    if bool(args.prompt) == bool(args.prompts):
        raise GenerationSetupError("give exactly one of --prompt TEXT and --prompts FILE")
    if args.image and (not args.prompt or args.task != "i2v"):
        raise GenerationSetupError("--image goes with --prompt and --task i2v (a prompt file gives 'image' per line)")
    if args.task == "i2v" and args.prompt and not args.image:
        raise GenerationSetupError("--task i2v needs --image for --prompt")
    if args.task == "t2i" and (args.fps is not None or args.duration is not None):
        raise GenerationSetupError("--fps and --duration do not apply to --task t2i (one frame, written as "
                                   "1 frame at 1 fps); drop them or use --task t2v")
    if args.steps < 1 or args.batch_size < 1 or not 0.0 <= args.history_mask_ratio <= 1.0:
        raise GenerationSetupError("--steps and --batch-size must be >= 1 and --history-mask-ratio in [0, 1]")
    tp = args.tensor_model_parallel_size
    if tp is not None and (tp < 1 or world_size % tp):
        raise GenerationSetupError(f"--tensor-model-parallel-size {tp} must be >= 1 and divide the number of "
                                   f"processes ({world_size})")


def tokenizer_specs(args, recorded) -> Dict[str, Tuple[str, str]]:
    """``{"video_tokenizer"|"text_tokenizer": (spec, where it came from)}``: the flag when given,
    else what the checkpoint's training run recorded (``recorded``: its ``data`` config section)."""
    specs = {}
    for name, flag in (("video_tokenizer", "--video-tokenizer"), ("text_tokenizer", "--text-tokenizer")):
        given, stored = getattr(args, name), getattr(recorded, name, None)
        if given:
            specs[name] = (given, flag)
        elif stored:
            specs[name] = (stored, f"data.{name} of the checkpoint's run_config.yaml")
        else:
            raise GenerationSetupError(f"no {flag} given and the checkpoint {args.load} records none (its "
                                       f"run_config.yaml has no data.{name}); pass {flag}")
    return specs


def _device(args, world_size: int) -> Optional[torch.device]:
    if args.device is None:
        return None
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise GenerationSetupError(f"--device {args.device!r}: expected cpu, cuda or cuda:N") from None
    from lumos_megatron.platform.distributed import default_backend

    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenerationSetupError(f"--device {args.device}: CUDA is not available on this machine")
    if device.type == "cpu" and world_size > 1 and default_backend() == "nccl":
        raise GenerationSetupError("--device cpu under torchrun needs a machine without CUDA (the ranks "
                                   "talk over NCCL, which moves only GPU tensors)")
    return device


class GenerationRun:
    """Everything a run needs, checked before any generation starts."""

    def __init__(self, args, model, text_tokenizer, video_tokenizer, specs: Dict[str, str],
                 records: List[PromptRecord], skipped: List[SkippedPrompt], groups: RunGroups):
        self.args, self.model, self.groups = args, model, groups
        self.text_tokenizer, self.video_tokenizer, self.specs = text_tokenizer, video_tokenizer, specs
        self.records, self.skipped = records, skipped
        defaults = TASK_DEFAULTS[args.task]
        self.fps = _choose(args.fps, defaults.fps)
        self.duration = _choose(args.duration, defaults.duration)
        self.resolution = _choose(args.resolution, defaults.resolution)
        self.frames = latent_frame_count(args.task, self.fps, self.duration, video_tokenizer.temporal_compression)
        self.to_generate = self.frames - (1 if args.task == "i2v" else 0)
        self.out = Path(args.out)
        self.is_main = groups.is_main
        sample_device = getattr(args, "sample_device", "model")
        self.sample_device = model.device if sample_device == "model" else torch.device("cpu")
        """Where the samples' generators draw (``--sample-device``)."""
        from lumos_megatron.inference.generation import SamplerSettings

        self.settings = SamplerSettings(
            steps=args.steps, cfg_scale=_choose(args.cfg, defaults.cfg_scale),
            history_mask_ratio=args.history_mask_ratio, temperature_schedule=args.temperature_schedule,
            kv_cache=not args.no_kv_cache, num_visual_codes=video_tokenizer.codebook_size)
        self.plan: Optional[Dict[str, int]] = None
        """``{sample name: data-parallel group}`` of the samples to generate (``from_args`` plans)."""
        self._determinants: Optional[Dict[str, Any]] = None

    @classmethod
    def from_args(cls, args) -> "GenerationRun":
        """Check the arguments and load model and tokenizers; ``GenerationSetupError`` otherwise."""
        from lumos_megatron.platform.distributed import detect_distributed_env

        world_size = detect_distributed_env().world_size
        _check_args(args, world_size)
        try:
            if args.prompt:
                records, skipped = [PromptRecord(0, args.prompt, args.image)], []
            else:
                records, skipped = read_prompt_file(args.prompts)
            if args.task != "i2v":
                size = frame_size(_choose(args.resolution, TASK_DEFAULTS[args.task].resolution))
        except (FileNotFoundError, ValueError) as err:
            raise GenerationSetupError(str(err)) from None
        from lumos_megatron.checkpoint.directory import CheckpointError
        from lumos_megatron.config.stored import read_run_config, resolve_checkpoint_dir
        from lumos_megatron.config import ConfigError
        from lumos_megatron.inference.model_loader import load_model
        from lumos_megatron.tokenizers.text import load_text_tokenizer
        from lumos_megatron.tokenizers.video.spec import load_video_tokenizer

        try:  # the tokenizers first: a missing one is reported before the model loads
            specs = tokenizer_specs(args, read_run_config(resolve_checkpoint_dir(args.load)).data)
        except CheckpointError as err:
            raise GenerationSetupError(f"--load {args.load}: {_with_load_hint(err)}") from None
        device = _device(args, world_size)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}[args.dtype]
        if dtype is None:  # bf16 where the model runs on a GPU
            on_gpu = device.type == "cuda" if device is not None else torch.cuda.is_available()
            dtype = torch.bfloat16 if on_gpu else torch.float32
        try:
            model = load_model(args.load, dtype=dtype, device=device,
                               tensor_parallel_size=args.tensor_model_parallel_size,
                               attention_backend=args.attention_backend)
        except (CheckpointError, ConfigError, ValueError) as err:
            raise GenerationSetupError(f"--load {args.load}: {_with_load_hint(err)}") from None
        loaded = {}
        for name, load in (("text_tokenizer", lambda spec: load_text_tokenizer(spec, model.vocab)),
                           ("video_tokenizer", lambda spec: load_video_tokenizer(spec, device=device))):
            spec, source = specs[name]
            try:
                loaded[name] = load(spec)
            except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
                raise GenerationSetupError(f"{name.replace('_', ' ')} {spec} (from {source}): {err}") from None
        run = cls(args, model, loaded["text_tokenizer"], loaded["video_tokenizer"],
                  {name: spec for name, (spec, _) in specs.items()}, records, skipped, RunGroups())
        try:
            grid = None if args.task == "i2v" else latent_grid(*size, run.video_tokenizer.spatial_compression)
            check_fits(grid, run.video_tokenizer.codebook_size, model.vocab)
        except ValueError as err:
            raise GenerationSetupError(str(err)) from None
        try:  # before any generation: a stale --out is refused as a set-up error, on every rank
            run.plan = run._shared_plan()
        except GenerationSetupError:
            run.close()
            raise
        return run

    # ------------------------------------------------------------------------------ determinants
    def _run_determinants(self) -> Dict[str, Any]:
        """What every sample of this run depends on (computed once)."""
        if self._determinants is None:
            from lumos_megatron.data.tokenizer_record import absolute_spec

            model, args = self.model, self.args
            checkpoint = Path(model.checkpoint).resolve()
            match = re.fullmatch(r"iter_(\d+)", checkpoint.name)
            sampler = {k: v for k, v in asdict(self.settings).items() if k not in _TOKEN_NEUTRAL_SETTINGS}
            # T2I/T2V: the frame size the resolution names (``352`` and ``448x256`` are one size);
            # I2V: the crop rule, which with the image's content gives the size.
            resolution = (str(self.resolution).lower().strip() if args.task == "i2v"
                          else list(frame_size(self.resolution)))
            self._determinants = {
                "format": DETERMINANTS_FORMAT,
                # The weights are identified by where they are and the run that wrote them (its
                # run_config.yaml); hashing the weights themselves would cost a full read per run.
                "checkpoint": {"path": str(checkpoint), "iteration": int(match.group(1)) if match else None,
                               "run_config_sha256": file_sha256(checkpoint / "run_config.yaml")},
                "text_tokenizer": absolute_spec(self.specs["text_tokenizer"]),
                "video_tokenizer": absolute_spec(self.specs["video_tokenizer"]),
                "task": args.task, "resolution": resolution, "fps": self.fps, "duration": self.duration,
                "latent_frames": self.frames, "sampler": sampler,
                "precision": model.config.train.precision,
                "attention_backend": model.config.model.attention_backend,
                "model_device": model.device.type if model.device is not None else None,
                "sample_device": self.sample_device.type if self.sample_device is not None else None,
            }
        return self._determinants

    def sample_determinants(self, record: PromptRecord) -> Dict[str, Any]:
        """Everything the tokens of ``record``'s sample depend on (a readable dict; hashed with
        ``determinants_hash``): the run's determinants, the prompt, the conditioning image's
        content (not its path) and the sample's seed."""
        return {**self._run_determinants(), "prompt": record.caption,
                "image_sha256": file_sha256(record.image) if record.image else None, "seed": self._seed(record)}

    # ------------------------------------------------------------------------------ the plan
    def _planned_size(self, record: PromptRecord) -> Optional[Tuple[int, int]]:
        try:
            if self.args.task == "i2v":
                return conditioning_frame_size(record.image, self.resolution) if record.image else None
            return frame_size(self.resolution)
        except ValueError:  # its preparation fails and says why (skipped.jsonl)
            return None

    def _pending(self) -> List[PromptRecord]:
        """The records to generate: no JSON yet, or (with ``--overwrite``) a JSON of other
        determinants, whose outputs are removed first. Raises ``StaleSampleError`` for the latter
        without ``--overwrite`` (one line: the first such sample, what changed, how many)."""
        pending, stale = [], []
        for record in self.records:
            path = self.out / f"{record.name}.json"
            if not path.is_file():
                pending.append(record)
                continue
            problem = stored_sample_problem(path, self.sample_determinants(record))
            if problem is not None:
                stale.append((path, problem))
                pending.append(record)
        if stale and not getattr(self.args, "overwrite", False):
            path, problem = stale[0]
            more = f"; {len(stale) - 1} more sample(s) in {self.out} differ too" if len(stale) > 1 else ""
            raise StaleSampleError(f"{path} was generated with other settings ({problem}){more}; pass --overwrite "
                                   "to regenerate, or choose another --out")
        for path, _ in stale:  # the JSON first: without it the sample counts as not generated
            for suffix in (".json", ".mp4", ".gif", ".png"):
                path.with_suffix(suffix).unlink(missing_ok=True)
        return pending

    def _plan(self) -> Dict[str, int]:
        """``{sample name: data-parallel group}`` of every sample to generate (global rank 0)."""
        self.out.mkdir(parents=True, exist_ok=True)
        pending = self._pending()
        sizes = [self._planned_size(r) for r in pending]
        spatial = self.video_tokenizer.spatial_compression
        costs = [0 if s is None else frame_block_length(*latent_grid(*s, spatial)) * self.to_generate for s in sizes]
        owners = balance_samples(costs, self.groups.data_parallel_size, sizes)
        return {r.name: owner for r, owner in zip(pending, owners)}

    def _shared_plan(self) -> Dict[str, int]:
        plan = None
        if self.is_main:
            try:
                plan = self._plan()
            except GenerationSetupError as err:  # every rank raises it: one line, exit status 2
                plan = err
            except Exception as err:  # noqa: BLE001 - every rank must leave the broadcast, then fail
                plan = RuntimeError(f"planning the prompt set failed: {type(err).__name__}: {err}")
        plan = self.groups.broadcast(plan)
        if isinstance(plan, Exception):
            raise plan
        return plan

    # ------------------------------------------------------------------------------ samples
    def _prepare(self, record: PromptRecord) -> PreparedSample:
        vocab, given = self.model.vocab, []
        if self.args.task == "i2v":
            if not record.image:
                raise ValueError("an I2V prompt needs an 'image'")
            block, size = conditioning_frame(record.image, self.resolution, self.video_tokenizer, vocab)
            given = [block]
        else:
            size = frame_size(self.resolution)
        prompt = task_prompt_ids(record.caption, self.args.task, size[0], size[1], self.fps, self.duration,
                                 self.text_tokenizer, vocab)
        check_fits(latent_grid(*size, self.video_tokenizer.spatial_compression), self.video_tokenizer.codebook_size,
                   vocab, self.model.config.model.max_position_embeddings, len(prompt), self.frames)
        return PreparedSample(record, prompt, given, size, self.sample_determinants(record))

    def _seed(self, record: PromptRecord) -> int:
        return record.seed if record.seed is not None else self.args.seed + record.index

    def run(self) -> Tuple[int, List[dict]]:
        """Generate this group's share of the samples not yet written; returns (samples written by
        all groups, skipped records of the whole prompt set)."""
        from lumos_megatron.data.video.errors import MediaError
        from lumos_megatron.tokenizers.text.prompt import CaptionError

        plan = self.plan if self.plan is not None else self._shared_plan()
        prepared: List[PreparedSample] = []
        skipped: List[SkippedPrompt] = []
        for record in self.records:
            if plan.get(record.name) != self.groups.data_parallel_rank:
                continue
            try:
                prepared.append(self._prepare(record))
            except (CaptionError, MediaError, ValueError, OSError) as err:
                skipped.append(SkippedPrompt(record.index, record.caption, f"{type(err).__name__}: {err}"))
        # Every group's skips (its TP ranks report the same ones), in prompt order.
        merged = {s.index: s.record() for s in self.skipped}
        for records in self.groups.gather([s.record() for s in skipped]):
            merged.update({r["index"]: r for r in records})
        skipped_records = [merged[i] for i in sorted(merged)]
        if self.is_main and (skipped_records or (self.out / "skipped.jsonl").exists()):
            with open(self.out / "skipped.jsonl", "w", encoding="utf-8") as f:
                for s in skipped_records:
                    f.write(json.dumps(s) + "\n")
        bar = None
        if self.is_main and not self.args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=len(prepared) * self.to_generate * self.settings.steps, desc="generate", unit="step")
        written = 0
        for batch in self._batches(prepared):
            written += self._generate(batch, bar)
        if bar is not None:
            bar.close()
        # The gather waits for every group, so every sample file exists when the index is written.
        written = sum(self.groups.gather(written))
        if self.is_main:
            write_index(self.out, [{"name": r.name, "index": r.index, "prompt": r.caption, "image": r.image,
                                    "seed": self._seed(r) if r.name in plan else None,
                                    "data_parallel_rank": plan.get(r.name)} for r in self.records])
        return written, skipped_records

    def _batches(self, prepared: List[PreparedSample]) -> List[List[PreparedSample]]:
        groups: dict = {}
        for sample in prepared:  # one frame size per batch, prompt order kept within a size
            groups.setdefault(sample.size, []).append(sample)
        size = self.args.batch_size
        return [g[i: i + size] for g in groups.values() for i in range(0, len(g), size)]

    def _generate(self, batch: List[PreparedSample], bar) -> int:
        from lumos_megatron.inference.generation import VideoRequest, generate_batch

        grid = latent_grid(*batch[0].size, self.video_tokenizer.spatial_compression)
        seeds = [self._seed(s.record) for s in batch]
        # One generator per sample, seeded by the sample alone: its tokens do not depend on the
        # group or the batch that generates it. On the model's device (default) the sampler's
        # [N, V] logits never leave it; on the CPU the draws equal a CPU run's on any machine.
        device = self.sample_device
        requests = [VideoRequest(s.prompt_ids, grid, self.fps, self.duration,
                                 torch.Generator(device=device).manual_seed(seed), self.frames, s.given_frames)
                    for s, seed in zip(batch, seeds)]
        tokens = generate_batch(self.model, requests, self.settings,
                                on_step=(lambda frame, step: bar.update(len(batch))) if bar is not None else None)
        if not self.groups.writes_samples:
            return 0
        for sample, seed, video in zip(batch, seeds, tokens):
            self._write(sample, seed, video, grid)
        return len(batch)

    def _write(self, sample: PreparedSample, seed: int, tokens: List[int], grid: Tuple[int, int]) -> None:
        from lumos_megatron.inference.video_writer import write_gif, write_mp4, write_png

        frames = self.video_tokenizer.decode(video_codes(tokens, self.model.vocab)).cpu().numpy()
        base = self.out / sample.record.name
        try:
            write_mp4(frames, base.with_suffix(".mp4"), self.fps)
            write_gif(frames, base.with_suffix(".gif"), self.fps)
            write_png(frames[0], base.with_suffix(".png"))
        except OSError as err:
            _raise_if_no_space(err, base, frames.nbytes)
            raise
        info = {
            "prompt": sample.record.caption, "image": sample.record.image, "task": self.args.task,
            "seed": seed, "width": sample.size[0], "height": sample.size[1], "latent_grid": list(grid),
            "fps": self.fps, "duration": self.duration, "latent_frames": self.frames, "rgb_frames": len(frames),
            "sampler": asdict(self.settings), "checkpoint": str(self.model.checkpoint),
            "text_tokenizer": self.specs["text_tokenizer"], "video_tokenizer": self.specs["video_tokenizer"],
            "data_parallel_rank": self.groups.data_parallel_rank,
            "sample_device": str(self.sample_device),
            "determinants": sample.determinants, "determinants_hash": determinants_hash(sample.determinants),
            "prompt_ids": sample.prompt_ids, "video_tokens": tokens,
        }
        tmp = base.with_name(f".{base.name}.json.tmp")
        try:
            tmp.write_text(json.dumps(info) + "\n")
        except OSError as err:
            _raise_if_no_space(err, base, frames.nbytes)
            raise
        os.replace(tmp, base.with_suffix(".json"))  # last: its presence means the sample is complete

    def close(self) -> None:
        """Tear down the process group the model loader created."""
        from lumos_megatron.platform.distributed import shutdown_distributed

        shutdown_distributed()
