"""Entry point: ``python -m lumos_megatron.evaluate DIR``: offline quality numbers of a generated set.

    python -m lumos_megatron.evaluate DIR [--reference DATA [--reference-samples N]]
        [--sources FILE] [--video-tokenizer SPEC|none] [--smoothing A] [--json-out PATH]
        [--no-progress]

``DIR`` is the ``--out`` of ``lumos_megatron.generate``. Writes ``DIR/metrics.json`` (or
``--json-out PATH``): per sample and averaged, VBench's temporal flicker, PSNR/SSIM against the
source clip (``--sources``) and of the video tokenizer's reconstruction of it (the ceiling),
PSNR/SSIM of the I2V first frame against its conditioning image; over the set, codebook usage
and, with ``--reference DATA`` (a pre-tokenized dataset), the Jensen–Shannon divergence between
the generated and the real code histograms, with its noise floor. Every number that could not be
computed is listed with the reason. The definitions are in the file itself.
Exit status: 0 done, 2 bad input (no such DIR, no sample, unusable --reference/--sources/--video-tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from lumos_megatron.cli.base import CommandParser

SUMMARY_METRICS = ("temporal_flicker", "psnr", "ssim", "tokenizer_psnr", "tokenizer_ssim")


def _parser() -> argparse.ArgumentParser:
    p = CommandParser("lumos_megatron.evaluate", "Offline quality numbers of a generated set (DIR/metrics.json; "
                      "also lumos-evaluate).", examples=[
                          "lumos-evaluate samples/t2v --reference data/pretokenized/train",
                          "lumos-evaluate samples/i2v --sources prompts_i2v.jsonl --json-out i2v_metrics.json"])
    p.add_argument("directory", metavar="DIR", help="output directory of lumos_megatron.generate")
    p.add_argument("--reference", metavar="DATA", help="pre-tokenized dataset directory (real code histogram)")
    p.add_argument("--reference-samples", type=int, metavar="N",
                   help="read at most N reference samples (evenly spaced)")
    p.add_argument("--sources", metavar="FILE", help='JSONL of source clips: {"sample": "sample_00003", "video": PATH, '
                   '"start"?: SECONDS|"centre"} per line, or the I2V prompt file with "reference_video" per line')
    p.add_argument("--video-tokenizer", metavar="SPEC", help="cosmos:DIR or fsq:CKPT.pt to decode the tokens and "
                   "reconstruct the source clips (default: each sample's recorded one; 'none': read the video files)")
    p.add_argument("--smoothing", type=float, default=0.0, metavar="A", help="pseudo-count per histogram bin (default 0)")
    p.add_argument("--json-out", metavar="PATH", help="write the metrics here instead of DIR/metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never a half-written metrics.json


def summary(metrics: dict, out: Path) -> dict:
    """The one-line stdout summary: sample count, the means, the divergence and the usage."""
    line = {"samples": metrics["samples"], "out": str(out)}
    for name in SUMMARY_METRICS:
        if name in metrics["aggregates"]:
            line[name] = metrics["aggregates"][name]["mean"]
    for key in ("js_divergence_bits", "noise_floor_bits"):
        if key in metrics["token_histogram"]:
            line[key] = metrics["token_histogram"][key]
    generated = metrics["codebook"].get("generated")
    if generated:
        line["codebook_usage"] = generated["usage"]
    return line


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, evaluate, write; returns the exit status."""
    args = _parser().parse_args(argv)
    # megatron-core (the indexed-dataset reader) warns about optional fused kernels it lacks:
    # nothing a user of this command can act on.
    from lumos_megatron.evaluation_metrics.generated_set import EvaluationInputError
    from lumos_megatron.evaluation_metrics.report import EvaluationOptions, evaluate_directory

    if args.reference_samples is not None and args.reference_samples < 1:
        print("lumos_megatron.evaluate: error: --reference-samples must be >= 1", file=sys.stderr)
        return 2
    if not args.smoothing >= 0:
        print("lumos_megatron.evaluate: error: --smoothing must be >= 0", file=sys.stderr)
        return 2
    options = EvaluationOptions(reference=args.reference, video_tokenizer=args.video_tokenizer,
                                sources=args.sources, reference_samples=args.reference_samples,
                                smoothing=args.smoothing, progress=not args.no_progress)
    try:
        metrics = evaluate_directory(args.directory, options)
    except EvaluationInputError as err:
        print(f"lumos_megatron.evaluate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.json_out) if args.json_out else Path(args.directory) / "metrics.json"
    _write_json(out, metrics)
    print(json.dumps(summary(metrics, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
