"""Reading what ``lumos_megatron.generate --out DIR`` wrote, for evaluation: the samples, their
codes and frames, their conditioning images and (given separately) their source clips.

A sample is ``DIR/sample_NNNNN.json`` (settings and ``video_tokens``, written last, so its presence
means the sample is complete) with ``.mp4``/``.gif``/``.png`` beside it. Frames come from the
tokens through the video tokenizer when one can be loaded (exact: no video codec in between), else
from the written files (the PNG for one-frame samples, where it is lossless; else the H.264 MP4).

Source clips. The sample JSON records the I2V conditioning ``image`` but not the clip it was taken
from, so the clips are given as a JSONL file (``read_sources``), or, should a sample JSON carry
one, by its ``reference_video`` field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from lumos_megatron.vocab import LumosVocab

SAMPLE_GLOB = "sample_*.json"
CENTRE = "centre"


class EvaluationInputError(ValueError):
    """Input the evaluation cannot use at all (missing directory, bad sources file, a tokenizer
    that was asked for and cannot be loaded): one line, exit status 2."""


@dataclass
class GeneratedSample:
    """One finished sample of a generated directory."""

    name: str
    """``sample_NNNNN``."""
    path: Path
    """Its JSON file."""
    info: dict
    """The JSON: ``task``, ``fps``, ``width``, ``height``, ``video_tokens``, ``image``, ..."""

    @property
    def task(self) -> str:
        """``t2i``, ``t2v`` or ``i2v`` (``unknown`` for a JSON without it)."""
        return str(self.info.get("task", "unknown"))

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.info["width"]), int(self.info["height"])

    @property
    def given_latent_frames(self) -> int:
        """Latent frames that were given, not sampled: the I2V conditioning frame."""
        return 1 if self.task == "i2v" else 0

    def file(self, suffix: str) -> Path:
        """The sample's output file with ``suffix`` (``.mp4``, ``.gif``, ``.png``)."""
        return self.path.with_suffix(suffix)


def load_samples(directory: Union[str, Path]) -> Tuple[List[GeneratedSample], List[Dict[str, str]]]:
    """The readable samples of ``directory`` in name order, and ``{"file", "reason"}`` for each
    ``sample_*.json`` that cannot be used. Raises EvaluationInputError for a missing directory
    or one without any sample JSON."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationInputError(f"{directory} is not a directory (expected the --out DIR of "
                                   "lumos_megatron.generate)")
    paths = sorted(directory.glob(SAMPLE_GLOB))
    if not paths:
        raise EvaluationInputError(f"{directory} has no {SAMPLE_GLOB} (is it the --out DIR of a finished "
                                   "lumos_megatron.generate run?)")
    samples, unreadable = [], []
    for path in paths:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            unreadable.append({"file": path.name, "reason": f"cannot read the JSON: {err}"})
            continue
        tokens = info.get("video_tokens") if isinstance(info, dict) else None
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) for t in tokens):
            unreadable.append({"file": path.name, "reason": "no 'video_tokens' list of integer ids"})
            continue
        if not all(isinstance(info.get(k), int) and info[k] > 0 for k in ("width", "height")):
            unreadable.append({"file": path.name, "reason": "no positive integer 'width' and 'height'"})
            continue
        samples.append(GeneratedSample(path.stem, path, info))
    return samples, unreadable


def sample_vocab(tokens: List[int]) -> LumosVocab:
    """The vocabulary that parses a generated token list.

    ``generate`` builds ``LumosVocab(vocab_size=<the checkpoint's>)`` with every id at its
    official default, so the defaults parse its tokens; only the vocabulary size (the top of the
    visual range) differs between checkpoints, and the largest id in the list bounds it from
    below. Reading the checkpoint is therefore unnecessary (and the set can be evaluated where
    the checkpoint is not).
    """
    return LumosVocab(vocab_size=max(LumosVocab().vocab_size, max(tokens) + 1))


def sample_codes(sample: GeneratedSample) -> torch.Tensor:
    """The ``[T_l, H_l, W_l]`` codes of a sample's ``video_tokens`` (ValueError when they do not parse)."""
    from lumos_megatron.inference.tasks import video_codes

    tokens = sample.info["video_tokens"]
    return video_codes(tokens, sample_vocab(tokens))


def read_video_file(path: Union[str, Path]) -> np.ndarray:
    """Every frame of a video file (MP4, GIF) or a still image as uint8 ``[T, H, W, 3]`` RGB.
    Raises ``MediaError`` for a missing or undecodable file."""
    from lumos_megatron.data.video import is_image_path, load_image, probe, read_frames_with

    path = str(path)
    if is_image_path(path):
        return load_image(path)
    info = probe(path)
    # PyAV: the generated files are small, and DALI cannot read GIFs.
    return read_frames_with(path, list(range(info.num_frames)), "pyav", info)[0]


class TokenizerCache:
    """Video tokenizers by spec, each loaded once.

    ``override`` is the ``--video-tokenizer`` flag: None uses each sample's recorded spec (when it
    loads; otherwise the sample's files are read), ``"none"`` never loads one, and anything else
    is loaded now, once, for every sample (EvaluationInputError when it cannot be).
    """

    def __init__(self, override: Optional[str] = None):
        self.override = override
        self._loaded: Dict[str, object] = {}
        self._failed: Dict[str, str] = {}
        if override is not None and override.lower() != "none":
            try:
                self._load(override)
            except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
                raise EvaluationInputError(f"--video-tokenizer {override}: {err}") from None

    def _load(self, spec: str):
        from lumos_megatron.tokenizers.video.spec import load_video_tokenizer

        if spec not in self._loaded:
            self._loaded[spec] = load_video_tokenizer(spec)
        return self._loaded[spec]

    def for_sample(self, sample: GeneratedSample) -> Tuple[Optional[object], Optional[str]]:
        """(tokenizer or None, why there is none)."""
        if self.override is not None:
            if self.override.lower() == "none":
                return None, "--video-tokenizer none"
            return self._loaded[self.override], None
        spec = sample.info.get("video_tokenizer")
        if not isinstance(spec, str) or not spec:
            return None, "the sample records no video_tokenizer"
        if spec in self._failed:
            return None, self._failed[spec]
        try:
            return self._load(spec), None
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
            self._failed[spec] = f"video tokenizer {spec} cannot be loaded ({err})"
            return None, self._failed[spec]


def sample_frames(sample: GeneratedSample, codes: Optional[torch.Tensor], tokenizer
                  ) -> Tuple[np.ndarray, str, Optional[str]]:
    """The sample's RGB frames (uint8 ``[T, H, W, 3]``), where they came from (``tokens``, decoded
    by ``tokenizer``, or the file name) and, when decoding the tokens failed, why. Raises
    ``MediaError``/ValueError when no source of frames works."""
    from lumos_megatron.data.video import MediaError

    note = None
    if tokenizer is not None and codes is not None:
        try:
            return tokenizer.decode(codes).cpu().numpy(), "tokens", None
        except (ValueError, RuntimeError) as err:  # e.g. codes outside a --video-tokenizer's codebook
            note = f"the video tokenizer cannot decode the tokens ({err})"
    one_frame = int(sample.info.get("rgb_frames", 0)) == 1
    order = (".png", ".mp4", ".gif") if one_frame else (".mp4", ".gif")
    errors = []
    for suffix in order:
        path = sample.file(suffix)
        if not path.is_file():
            continue
        try:
            return read_video_file(path), path.name, note
        except MediaError as err:
            errors.append(str(err))
    raise ValueError("no readable " + "/".join(order) + " file" + (f": {errors[0]}" if errors else ""))


# ------------------------------------------------------------------ reference pictures and clips
@dataclass(frozen=True)
class SourceClip:
    """The real clip a sample should be compared with."""

    path: str
    start: Union[float, str] = 0.0
    """Where the compared window starts: seconds from the clip's beginning (0: the conditioning
    image is the clip's first frame), or ``"centre"``: the centred window pre-tokenization takes."""


def resolve_path(path: str, *bases: Path) -> str:
    """``path`` as given when absolute or existing; else the first ``base / path`` that exists;
    else as given (the error comes when it is read)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    for base in bases:
        candidate = base / path
        if candidate.exists():
            return str(candidate)
    return path


def _start_value(value, where: str) -> Union[float, str]:
    if value is None:
        return 0.0
    if value == CENTRE:
        return CENTRE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EvaluationInputError(f"{where}: the start must be seconds >= 0 or {CENTRE!r}, got {value!r}")
    return float(value)


def read_sources(path: Union[str, Path]) -> Tuple[Dict[str, SourceClip], List[int]]:
    """Sample name → :class:`SourceClip` from a JSONL file, and the line numbers it ignored.

    Each non-blank line is one of

    * ``{"sample": "sample_00003", "video": PATH, "start"?: SECONDS | "centre"}``, or
    * a prompt-file line, ``{"prompt": ..., "image": ..., "reference_video": PATH,
      "reference_start"?: ...}``: the prompt file itself can be passed, and its n-th non-blank
      line is ``sample_{n:05d}``, as ``lumos_megatron.generate`` names them (it ignores the extra
      keys). Lines without ``reference_video`` have no source; lines that are not JSON objects
      are ignored (and counted, as the prompt file does).

    Relative paths are relative to the file's directory. EvaluationInputError for a missing file
    or a malformed entry.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"--sources {path}: no such file")
    sources: Dict[str, SourceClip] = {}
    ignored: List[int] = []
    lines = [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    for index, (number, line) in enumerate((n, line) for n, line in lines if line):
        where = f"--sources {path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = None
        if not isinstance(item, dict):
            ignored.append(number)
            continue
        if "sample" in item:
            name, video, start = item["sample"], item.get("video"), item.get("start")
            if not isinstance(name, str) or not isinstance(video, str) or not video:
                raise EvaluationInputError(f"{where}: expected {{\"sample\": NAME, \"video\": PATH}}")
        else:
            name, video, start = f"sample_{index:05d}", item.get("reference_video"), item.get("reference_start")
            if video is None:
                continue
            if not isinstance(video, str) or not video:
                raise EvaluationInputError(f"{where}: 'reference_video' must be a path string")
        video = os.path.abspath(path.parent / video)  # absolute: metrics.json is read from anywhere
        sources[name] = SourceClip(video, _start_value(start, where))
    return sources, ignored


def source_clip_for(sample: GeneratedSample, sources: Dict[str, SourceClip]) -> Optional[SourceClip]:
    """The sample's source clip: from ``--sources``, else a ``reference_video`` in its JSON."""
    if sample.name in sources:
        return sources[sample.name]
    video = sample.info.get("reference_video")
    if isinstance(video, str) and video:
        start = sample.info.get("reference_start")
        return SourceClip(resolve_path(video, sample.path.parent),
                          _start_value(start, f"{sample.path.name} reference_start"))
    return None


def window_indices(num_frames: int, src_fps: float, fps: float, count: int,
                   start: Union[float, str]) -> np.ndarray:
    """Source frame indices of ``count`` frames at ``fps`` from ``start`` (seconds, or ``"centre"``):
    for each output frame the source frame whose interval holds its centre (pre-tokenization's
    "exact" rule). Output frames past the end of the clip are dropped, so fewer may come back."""
    clip_s = num_frames / src_fps
    begin = max(0.0, (clip_s - count / fps) / 2) if start == CENTRE else float(start)
    centres = begin + (np.arange(count, dtype=np.float64) + 0.5) / fps
    centres = centres[centres < clip_s]
    return np.clip(np.floor(centres * src_fps).astype(np.int64), 0, num_frames - 1)


def load_source_clip(clip: SourceClip, fps: float, count: int, size: Tuple[int, int]) -> np.ndarray:
    """Up to ``count`` frames of ``clip`` at ``fps``, cropped to ``size`` (width, height) as the
    I2V conditioning image is (scale to cover, centre crop): uint8 ``[n, H, W, 3]``. A still
    image gives one frame. Raises ``MediaError`` for an unreadable file, ValueError for a start
    past the end."""
    from lumos_megatron.data.video import crop_frames, is_image_path, load_image, probe, read_frames_with

    if is_image_path(clip.path):
        frames = load_image(clip.path)
    else:
        info = probe(clip.path)
        indices = window_indices(info.num_frames, info.fps, fps, count, clip.start)
        if indices.size == 0:
            raise ValueError(f"{clip.path}: start {clip.start} s is past the end of the clip ({info.duration:.2f} s)")
        frames = read_frames_with(clip.path, indices, "auto", info)[0]
    return crop_frames(frames, [size])


def conditioning_picture(sample: GeneratedSample) -> Optional[np.ndarray]:
    """The I2V conditioning image cropped to the sample's size (uint8 ``[1, H, W, 3]``), or None
    for a sample without one. Raises ``MediaError`` for an unreadable image."""
    from lumos_megatron.data.video import crop_frames, load_image

    image = sample.info.get("image")
    if sample.task != "i2v" or not isinstance(image, str) or not image:
        return None
    return crop_frames(load_image(resolve_path(image, sample.path.parent)), [sample.size])
