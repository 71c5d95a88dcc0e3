"""One ``lumos_megatron.generate`` run: set-up checks, prompt preparation, batched generation,
and the outputs of every sample (MP4, GIF, first-frame PNG, JSON with settings and tokens)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Tuple

import torch
import torch.distributed as dist

from lumos_megatron.inference.prompt_file import PromptRecord, SkippedPrompt, read_prompt_file
from lumos_megatron.inference.tasks import (
    TASK_DEFAULTS,
    check_fits,
    conditioning_frame,
    frame_size,
    latent_frame_count,
    latent_grid,
    task_prompt_ids,
    video_codes,
)


class GenerationSetupError(ValueError):
    """A run that cannot start (bad arguments, checkpoint, tokenizer, frame size): one line."""


@dataclass
class PreparedSample:
    """A prompt ready to generate."""

    record: PromptRecord
    prompt_ids: List[int]
    given_frames: List[List[int]]
    size: Tuple[int, int]
    """(width, height) in pixels."""


def _choose(value, default):
    return default if value is None else value


class GenerationRun:
    """Everything a run needs, checked before any generation starts."""

    def __init__(self, args, model, text_tokenizer, video_tokenizer, records, skipped):
        self.args, self.model = args, model
        self.text_tokenizer, self.video_tokenizer = text_tokenizer, video_tokenizer
        self.records, self.skipped = records, skipped
        defaults = TASK_DEFAULTS[args.task]
        self.fps = 1 if args.task == "t2i" else _choose(args.fps, defaults.fps)
        self.duration = 1 if args.task == "t2i" else _choose(args.duration, defaults.duration)
        self.resolution = _choose(args.resolution, defaults.resolution)
        self.frames = latent_frame_count(args.task, self.fps, self.duration)
        self.out = Path(args.out)
        self.is_writer = not dist.is_initialized() or dist.get_rank() == 0
        from lumos_megatron.inference.generation import SamplerSettings

        self.settings = SamplerSettings(
            steps=args.steps, cfg_scale=_choose(args.cfg, defaults.cfg_scale),
            history_mask_ratio=args.history_mask_ratio, temperature_schedule=args.temperature_schedule,
            kv_cache=not args.no_kv_cache, num_visual_codes=video_tokenizer.codebook_size)

    @classmethod
    def from_args(cls, args) -> "GenerationRun":
        """Check the arguments and load model and tokenizers; ``GenerationSetupError`` otherwise."""
        if bool(args.prompt) == bool(args.prompts):
            raise GenerationSetupError("give exactly one of --prompt TEXT and --prompts FILE")
        if args.image and (not args.prompt or args.task != "i2v"):
            raise GenerationSetupError("--image goes with --prompt and --task i2v (a prompt file gives 'image' per line)")
        if args.task == "i2v" and args.prompt and not args.image:
            raise GenerationSetupError("--task i2v needs --image for --prompt")
        if args.steps < 1 or args.batch_size < 1 or not 0.0 <= args.history_mask_ratio <= 1.0:
            raise GenerationSetupError("--steps and --batch-size must be >= 1 and --history-mask-ratio in [0, 1]")
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
        from lumos_megatron.config import ConfigError
        from lumos_megatron.inference.model_loader import load_model
        from lumos_megatron.tokenizers.text import load_text_tokenizer
        from lumos_megatron.tokenizers.video.spec import load_video_tokenizer

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}[args.dtype]
        if dtype is None:
            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        try:
            model = load_model(args.load, dtype=dtype)
        except (CheckpointError, ConfigError, ValueError) as err:
            raise GenerationSetupError(f"--load {args.load}: {err}") from None
        try:
            text_tokenizer = load_text_tokenizer(args.text_tokenizer, model.vocab)
            video_tokenizer = load_video_tokenizer(args.video_tokenizer)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
            raise GenerationSetupError(f"tokenizer: {err}") from None
        run = cls(args, model, text_tokenizer, video_tokenizer, records, skipped)
        try:
            check_fits(None if args.task == "i2v" else latent_grid(*size), video_tokenizer.codebook_size, model.vocab)
        except ValueError as err:
            raise GenerationSetupError(str(err)) from None
        return run

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
        check_fits(latent_grid(*size), self.video_tokenizer.codebook_size, vocab,
                   self.model.config.model.max_position_embeddings, len(prompt), self.frames)
        return PreparedSample(record, prompt, given, size)

    def _already_written(self) -> set:
        names = {r.name for r in self.records if (self.out / f"{r.name}.json").is_file()} if self.is_writer else None
        if dist.is_initialized():  # every rank must skip the same samples
            shared = [names]
            dist.broadcast_object_list(shared, src=0)
            names = shared[0]
        return names

    def run(self) -> Tuple[int, List[dict]]:
        """Generate every prompt not yet written; returns (samples written, skipped records)."""
        from lumos_megatron.data.video.errors import MediaError
        from lumos_megatron.tokenizers.text.prompt import CaptionError

        if self.is_writer:
            self.out.mkdir(parents=True, exist_ok=True)
        done = self._already_written()
        prepared: List[PreparedSample] = []
        skipped = list(self.skipped)
        for record in self.records:
            if record.name in done:
                continue
            try:
                prepared.append(self._prepare(record))
            except (CaptionError, MediaError, ValueError, OSError) as err:
                skipped.append(SkippedPrompt(record.index, record.caption, f"{type(err).__name__}: {err}"))
        if self.is_writer and (skipped or (self.out / "skipped.jsonl").exists()):
            with open(self.out / "skipped.jsonl", "w", encoding="utf-8") as f:
                for s in skipped:
                    f.write(json.dumps(s.record()) + "\n")
        batches = self._batches(prepared)
        bar = None
        if self.is_writer and not self.args.no_progress:
            from tqdm import tqdm

            to_generate = self.frames - (1 if self.args.task == "i2v" else 0)
            bar = tqdm(total=len(prepared) * to_generate * self.settings.steps, desc="generate", unit="step")
        written = 0
        for batch in batches:
            written += self._generate(batch, bar)
        if bar is not None:
            bar.close()
        return written, [s.record() for s in skipped]

    def _batches(self, prepared: List[PreparedSample]) -> List[List[PreparedSample]]:
        groups: dict = {}
        for sample in prepared:  # one frame size per batch, prompt order kept within a size
            groups.setdefault(sample.size, []).append(sample)
        size = self.args.batch_size
        return [g[i: i + size] for g in groups.values() for i in range(0, len(g), size)]

    def _generate(self, batch: List[PreparedSample], bar) -> int:
        from lumos_megatron.inference.generation import VideoRequest, generate_batch

        grid = latent_grid(*batch[0].size)
        seeds = [s.record.seed if s.record.seed is not None else self.args.seed + s.record.index for s in batch]
        requests = [VideoRequest(s.prompt_ids, grid, self.fps, self.duration, torch.Generator().manual_seed(seed),
                                 self.frames, s.given_frames) for s, seed in zip(batch, seeds)]
        tokens = generate_batch(self.model, requests, self.settings,
                                on_step=(lambda frame, step: bar.update(len(batch))) if bar is not None else None)
        if not self.is_writer:
            return 0
        for sample, seed, video in zip(batch, seeds, tokens):
            self._write(sample, seed, video, grid)
        return len(batch)

    def _write(self, sample: PreparedSample, seed: int, tokens: List[int], grid: Tuple[int, int]) -> None:
        from lumos_megatron.inference.video_writer import write_gif, write_mp4, write_png

        frames = self.video_tokenizer.decode(video_codes(tokens, self.model.vocab)).cpu().numpy()
        base = self.out / sample.record.name
        write_mp4(frames, base.with_suffix(".mp4"), self.fps)
        write_gif(frames, base.with_suffix(".gif"), self.fps)
        write_png(frames[0], base.with_suffix(".png"))
        info = {
            "prompt": sample.record.caption, "image": sample.record.image, "task": self.args.task,
            "seed": seed, "width": sample.size[0], "height": sample.size[1], "latent_grid": list(grid),
            "fps": self.fps, "duration": self.duration, "latent_frames": self.frames, "rgb_frames": len(frames),
            "sampler": asdict(self.settings), "checkpoint": str(self.model.checkpoint),
            "text_tokenizer": self.args.text_tokenizer, "video_tokenizer": self.args.video_tokenizer,
            "prompt_ids": sample.prompt_ids, "video_tokens": tokens,
        }
        tmp = base.with_name(f".{base.name}.json.tmp")
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, base.with_suffix(".json"))  # last: its presence means the sample is complete

    def close(self) -> None:
        """Tear down the process group the model loader created."""
        from lumos_megatron.platform.distributed import shutdown_distributed

        shutdown_distributed()

