"""``evaluate_directory(DIR)``: the offline quality numbers of a generated set, as the JSON that
``python -m lumos_megatron.evaluate`` writes to ``DIR/metrics.json``.

Per sample: VBench's temporal flicker; for a sample with a source clip, PSNR/SSIM against it and
of the video tokenizer's reconstruction of it (the ceiling); for I2V, PSNR/SSIM of the first frame
against the conditioning image. Over the set: codebook usage of the generated codes and, with a
pre-tokenized reference dataset, the Jensen–Shannon divergence of the two code histograms.
Every number that cannot be computed is listed with the reason instead.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from lumos_megatron.evaluation_metrics.generated_set import (
    EvaluationInputError,
    GeneratedSample,
    SourceClip,
    TokenizerCache,
    conditioning_picture,
    load_samples,
    load_source_clip,
    read_sources,
    sample_codes,
    sample_frames,
    source_clip_for,
)
from lumos_megatron.evaluation_metrics.pixels import psnr, ssim, temporal_flicker
from lumos_megatron.evaluation_metrics.tokens import token_histogram_divergence, usage_from_counts

FORMAT = "lumos_generated_set_metrics"
VERSION = 1

DEFINITIONS = {
    "frames": "RGB frames decoded from the sample's video_tokens with the video tokenizer ('tokens', exact), or "
              "read from its file (frames_from names it; the MP4 is H.264-compressed, a one-frame sample's PNG is "
              "lossless). uint8 [T, H, W, 3].",
    "temporal_flicker": "VBench temporal_flickering (raw, before their leaderboard normalisation): "
                        "(255 - mean over consecutive frame pairs of the mean absolute pixel difference) / 255. "
                        "1 = no change between frames; higher is better. Samples of one frame are skipped.",
    "psnr": "PSNR in dB of the sample against its source clip over the frames both have: "
            "10 log10(255^2 / MSE), MSE over all frames, pixels and RGB channels; 'inf' when identical. The "
            "source clip is sampled at the sample's fps from its start (or centred) and cropped to the "
            "sample's size as the I2V image is.",
    "ssim": "SSIM of the sample against its source clip: Wang et al. 2004, 11x11 Gaussian window "
            "(sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, valid windows only, on BT.601 luma, "
            "averaged over all windows of all compared frames. 1 = identical.",
    "tokenizer_psnr": "PSNR of the video tokenizer's reconstruction (encode then decode) of the source clip "
                      "against the clip: the ceiling of 'psnr' for samples decoded by this tokenizer.",
    "tokenizer_ssim": "SSIM of the tokenizer's reconstruction of the source clip against the clip (ceiling of 'ssim').",
    "conditioning_psnr": "I2V: PSNR of the sample's first frame against the conditioning image cropped to the "
                         "sample's size (the given frame after the tokenizer round trip).",
    "conditioning_ssim": "I2V: SSIM of the sample's first frame against the cropped conditioning image.",
    "codebook": "Over the generated codes (the I2V conditioning frame excluded: it is given, not sampled): "
                "codes_used / codebook_size (usage), entropy in bits of the code distribution, perplexity "
                "2^entropy, entropy / log2(codebook_size). Usage is bounded by tokens / codebook_size.",
    "js_divergence_bits": "Jensen-Shannon divergence (bits, 0..1) between the code histograms of the generated "
                          "codes and of the reference data's frames, after adding 'smoothing' to every bin.",
    "noise_floor_bits": "The same divergence between a random subset of the reference (as many samples as the "
                        "generated set, seed 0) and the rest of it: what sampling noise alone gives.",
}
PIXEL_METRICS = ("temporal_flicker", "psnr", "ssim", "tokenizer_psnr", "tokenizer_ssim",
                 "conditioning_psnr", "conditioning_ssim")


@dataclass
class EvaluationOptions:
    """What ``evaluate_directory`` compares the samples with, and how."""

    reference: Optional[str] = None
    """A pre-tokenized dataset directory (the code histogram of real data)."""
    video_tokenizer: Optional[str] = None
    """None: each sample's recorded spec; ``"none"``: read the video files; else this spec."""
    sources: Optional[str] = None
    """JSONL of source clips (``generated_set.read_sources``)."""
    reference_samples: Optional[int] = None
    """Read at most this many reference samples (evenly spaced)."""
    smoothing: float = 0.0
    """Pseudo-count added to every histogram bin before the divergence."""
    progress: bool = True


def _json_number(value: float):
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def summarize(values: List[float]) -> Dict[str, object]:
    """``{mean, count, min, max}`` of a metric; infinite values (identical videos' PSNR) are
    counted in ``count`` and ``infinite`` and left out of the mean, min and max."""
    finite = [v for v in values if math.isfinite(v)]
    out: Dict[str, object] = {"mean": float(np.mean(finite)) if finite else None, "count": len(values)}
    if finite:
        out.update(min=float(min(finite)), max=float(max(finite)))
    if len(finite) < len(values):
        out["infinite"] = len(values) - len(finite)
    return out


def _skip(skipped: Dict[str, str], names: Tuple[str, ...], reason: str) -> None:
    for name in names:
        skipped.setdefault(name, reason)


class _SampleEvaluation:
    """The numbers of one sample (``entry``) and its generated codes (``codes``, or None)."""

    def __init__(self, sample: GeneratedSample, tokenizers: TokenizerCache, sources: Dict[str, SourceClip],
                 no_source: str):
        from lumos_megatron.data.video import MediaError

        self.sample, self.codes, self.codebook_size, self.no_source = sample, None, None, no_source
        self.metrics: Dict[str, float] = {}
        self.skipped: Dict[str, str] = {}
        self.entry: Dict[str, object] = {"sample": sample.name, "task": sample.task}
        try:
            codes = sample_codes(sample)
        except ValueError as err:
            codes = None
            self.entry["codes_error"] = f"video_tokens do not parse: {err}"
        tokenizer, why = tokenizers.for_sample(sample)
        if codes is not None:
            self.codes = codes[sample.given_latent_frames:].reshape(-1).numpy()
            self.entry.update(generated_codes=int(self.codes.size), distinct_codes=int(np.unique(self.codes).size))
            recorded = sample.info.get("sampler", {}).get("num_visual_codes") if isinstance(
                sample.info.get("sampler"), dict) else None
            self.codebook_size = tokenizer.codebook_size if tokenizer is not None else recorded
        try:
            frames, origin, note = sample_frames(sample, codes, tokenizer)
        except (MediaError, ValueError, RuntimeError) as err:
            _skip(self.skipped, PIXEL_METRICS, f"no frames: {err}")
            return
        self.entry.update(frames=int(frames.shape[0]), frames_from=origin)
        if origin != "tokens":
            self.entry["frames_note"] = note or why
        if frames.shape[0] >= 2:
            self.metrics["temporal_flicker"] = temporal_flicker(frames)
        else:
            self.skipped["temporal_flicker"] = "one frame: nothing to flicker"
        self._conditioning(frames)
        self._source(frames, tokenizer, why, source_clip_for(sample, sources))

    def _pair(self, prefix: str, a: np.ndarray, b: np.ndarray) -> None:
        """``{prefix}psnr`` and ``{prefix}ssim`` of ``a`` against ``b``, or why they cannot be had."""
        try:
            values = psnr(a, b), ssim(a, b)
        except ValueError as err:  # frames of another size than the JSON says, or under 11 px
            return _skip(self.skipped, (f"{prefix}psnr", f"{prefix}ssim"), str(err))
        self.metrics[f"{prefix}psnr"], self.metrics[f"{prefix}ssim"] = values

    def _conditioning(self, frames: np.ndarray) -> None:
        from lumos_megatron.data.video import MediaError

        names = ("conditioning_psnr", "conditioning_ssim")
        if self.sample.task != "i2v":
            return _skip(self.skipped, names, "not an I2V sample")
        try:
            picture = conditioning_picture(self.sample)
        except (MediaError, ValueError) as err:
            return _skip(self.skipped, names, f"conditioning image unreadable: {err}")
        if picture is None:
            return _skip(self.skipped, names, "the sample records no conditioning image")
        self._pair("conditioning_", frames[:1], picture)

    def _source(self, frames: np.ndarray, tokenizer, why: Optional[str], clip: Optional[SourceClip]) -> None:
        from lumos_megatron.data.video import MediaError

        names = ("psnr", "ssim", "tokenizer_psnr", "tokenizer_ssim")
        if clip is None:
            return _skip(self.skipped, names, self.no_source)
        fps = float(self.sample.info.get("fps") or 1)
        try:
            source = load_source_clip(clip, fps, int(frames.shape[0]), self.sample.size)
        except (MediaError, ValueError) as err:
            return _skip(self.skipped, names, f"source clip unreadable: {err}")
        count = int(source.shape[0])
        self.entry["source"] = {"video": clip.path, "start": clip.start, "frames_compared": count}
        self._pair("", frames[:count], source)
        if tokenizer is None:
            return _skip(self.skipped, names[2:], f"no video tokenizer for the reconstruction ({why})")
        try:
            reconstruction = tokenizer.decode(tokenizer.encode(source)).cpu().numpy()[:count]
        except (ValueError, RuntimeError) as err:
            return _skip(self.skipped, names[2:], f"the tokenizer cannot reconstruct the source clip: {err}")
        self._pair("tokenizer_", reconstruction, source)

    def result(self) -> Dict[str, object]:
        """The per-sample entry of metrics.json."""
        self.entry["metrics"] = {k: _json_number(v) for k, v in self.metrics.items()}
        self.entry["skipped"] = dict(self.skipped)
        return self.entry


def _add_counts(total: Optional[np.ndarray], codes: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(codes.astype(np.int64), minlength=size)
    if total is None:
        return counts
    if total.size < counts.size:
        total = np.pad(total, (0, counts.size - total.size))
    total[: counts.size] += counts
    return total


def _codebook_size(evaluations: List[_SampleEvaluation], counts: np.ndarray, notes: List[str]) -> int:
    sizes = {e.codebook_size for e in evaluations if e.codes is not None and isinstance(e.codebook_size, int)}
    if len(sizes) > 1:
        notes.append(f"samples disagree on the codebook size ({sorted(sizes)}); the largest is used")
    if not sizes:
        notes.append("no sample records its codebook size and no tokenizer was loaded: the codebook is taken "
                     "to end at the largest code seen, so usage is an upper bound")
        return int(counts.size)
    return max(max(sizes), int(counts.size))


def _token_section(counts: Optional[np.ndarray], n_samples: int, options: EvaluationOptions,
                   specs: set, notes: List[str]) -> Tuple[Dict[str, object], Dict[str, object]]:
    """The ``codebook`` and ``token_histogram`` entries."""
    from lumos_megatron.evaluation_metrics.reference import reference_code_counts

    if counts is None or counts.sum() == 0:
        return {"skipped": "no sample has generated codes"}, {"skipped": "no sample has generated codes"}
    codebook: Dict[str, object] = {"generated": {**usage_from_counts(counts).as_dict(), "samples": n_samples}}
    if options.reference is None:
        return codebook, {"skipped": "no --reference DATA given"}
    try:
        ref = reference_code_counts(options.reference, counts.size, max_samples=options.reference_samples,
                                    floor_samples=n_samples, progress=options.progress)
    except EvaluationInputError:
        raise
    except ValueError as err:  # codes outside the generated codebook: another tokenizer
        print(f"lumos_megatron.evaluate: warning: {err}", file=sys.stderr)
        return codebook, {"skipped": str(err), "reference": options.reference}
    histogram: Dict[str, object] = {"reference": ref.path, "reference_samples": ref.samples,
                                    "reference_total_samples": ref.total_samples, "smoothing": options.smoothing,
                                    "generated_tokens": int(counts.sum()), "reference_tokens": int(ref.counts.sum())}
    if ref.counts.sum() == 0:
        histogram["skipped"] = "the reference samples hold no video codes"
        return codebook, histogram
    codebook["reference"] = {**usage_from_counts(ref.counts).as_dict(), "samples": ref.samples}
    histogram["js_divergence_bits"] = token_histogram_divergence(counts, ref.counts, options.smoothing)
    rest = ref.counts - ref.floor_counts if ref.floor_counts is not None else None
    if rest is not None and ref.floor_counts.sum() and rest.sum():
        histogram["noise_floor_bits"] = token_histogram_divergence(ref.floor_counts, rest, options.smoothing)
        histogram["noise_floor_samples"] = ref.floor_samples
    else:
        histogram["noise_floor_skipped"] = "the reference has fewer than 2 samples' codes to split"
    if ref.video_tokenizer and specs and ref.video_tokenizer not in specs:
        notes.append(f"the reference was tokenized with {ref.video_tokenizer} and the samples name "
                     f"{', '.join(sorted(specs))}: the histograms compare only if these are the same tokenizer")
    return codebook, histogram


def _aggregates(evaluations: List[_SampleEvaluation]) -> Dict[str, object]:
    values: Dict[str, List[float]] = {}
    for evaluation in evaluations:
        for name, value in evaluation.metrics.items():
            values.setdefault(name, []).append(value)
    return {name: summarize(values[name]) for name in PIXEL_METRICS if name in values}


def evaluate_directory(directory: str | Path, options: Optional[EvaluationOptions] = None) -> Dict[str, object]:
    """Evaluate the generated set in ``directory`` (see the module docstring); returns the
    metrics.json content. Raises ``EvaluationInputError`` for input it cannot use at all."""
    from tqdm import tqdm

    options = options or EvaluationOptions()
    samples, unreadable = load_samples(directory)
    if not samples:
        raise EvaluationInputError(f"{directory}: none of its {len(unreadable)} sample JSON files is readable "
                                   f"({unreadable[0]['file']}: {unreadable[0]['reason']})")
    sources, ignored = read_sources(options.sources) if options.sources else ({}, [])
    tokenizers = TokenizerCache(options.video_tokenizer)
    no_source = (f"no source clip: {options.sources} names none for this sample" if options.sources else
                 "no source clip: the sample JSON records none (give --sources FILE)")
    evaluations: List[_SampleEvaluation] = []
    counts: Optional[np.ndarray] = None
    for sample in tqdm(samples, desc="evaluate", unit="sample", disable=not options.progress):
        evaluation = _SampleEvaluation(sample, tokenizers, sources, no_source)
        evaluations.append(evaluation)
        if evaluation.codes is not None and evaluation.codes.size:
            counts = _add_counts(counts, evaluation.codes, int(evaluation.codes.max()) + 1)
    notes: List[str] = []
    with_codes = [e for e in evaluations if e.codes is not None]
    if counts is not None:
        size = _codebook_size(evaluations, counts, notes)
        counts = np.pad(counts, (0, size - counts.size))
    specs = {e.sample.info["video_tokenizer"] for e in evaluations
             if isinstance(e.sample.info.get("video_tokenizer"), str)}
    codebook, histogram = _token_section(counts, len(with_codes), options, specs, notes)
    entries = [e.result() for e in evaluations]
    skipped: Dict[str, Dict[str, object]] = {}
    for evaluation in evaluations:
        for name, reason in evaluation.skipped.items():
            bucket = skipped.setdefault(name, {"count": 0, "reasons": Counter()})
            bucket["count"] += 1
            bucket["reasons"][reason] += 1
    by_task: Dict[str, List[_SampleEvaluation]] = {}
    for evaluation in evaluations:
        by_task.setdefault(evaluation.sample.task, []).append(evaluation)
    return {
        "format": FORMAT, "version": VERSION, "directory": str(directory),
        "samples": len(samples), "unreadable_samples": unreadable,
        "tasks": {task: len(group) for task, group in sorted(by_task.items())},
        "video_tokenizer": options.video_tokenizer or "each sample's recorded video_tokenizer",
        "sources": ({"file": options.sources, "samples_with_source": sum("source" in e for e in entries),
                     "ignored_lines": ignored} if options.sources else None),
        "definitions": DEFINITIONS,
        "aggregates": _aggregates(evaluations),
        "aggregates_by_task": {task: _aggregates(group) for task, group in sorted(by_task.items())},
        "skipped": {name: {"count": b["count"], "reasons": dict(b["reasons"])} for name, b in skipped.items()},
        "codebook": codebook, "token_histogram": histogram, "notes": notes,
        "per_sample": entries,
    }
