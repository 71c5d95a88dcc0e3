"""Pre-tokenize videos/images + captions into Lumos indexed-dataset shards.

    lumos-pretokenize --manifest FILE --output DIR [--video-tokenizer SPEC]
        [--text-tokenizer SPEC] [--workers N] [--fps F --duration S --resolution R]

(also ``python tools/pretokenize.py``.) Writes ``DIR/shard-XXXXX.{bin,idx,meta.jsonl}``,
``DIR/dataset.json`` and ``DIR/skipped.jsonl`` (one ``{"path", "reason", ...}`` line per skipped
input). Re-running the same command resumes an interrupted run. Exit status 0 when finished, even
with skipped inputs; 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from lumos_megatron.cli.base import CommandParser, fail, run

PROG = "lumos-pretokenize"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``lumos-pretokenize``."""
    p = CommandParser(PROG, __doc__.split("\n\n")[0], examples=[
        "lumos-pretokenize --manifest clips.csv --output data/clips --video-tokenizer fsq:runs/fsq_tok/last.pt",
        "lumos-pretokenize --manifest webvid.jsonl --output data/webvid --video-tokenizer cosmos:ckpt/"
        "Cosmos-Tokenizer-DV4x8x8 --text-tokenizer hf:chameleon/tokenizer.json --workers 8 --fps 12 --duration 7",
        "lumos-pretokenize --manifest clips.csv --output data/smoke --resolution 64   # untrained tokenizers"])
    p.add_argument("--manifest", required=True, help=".csv (path, caption|text) or .jsonl manifest")
    p.add_argument("--output", required=True, help="dataset directory (also what --data-path takes)")
    p.add_argument("--video-tokenizer", default=None,
                   help="cosmos:DIR (encoder.jit/decoder.jit of Cosmos DV4x8x8) or fsq:CKPT.pt "
                        "(lumos-train-video-tokenizer); default: an UNTRAINED FSQ tokenizer "
                        "(seed 0, saved in --output), only good for smoke-testing the pipeline")
    p.add_argument("--text-tokenizer", default=None,
                   help="hf:tokenizer.json (Chameleon's, as Lumos-1) or sp:MODEL.model; default: a "
                        "sentencepiece model trained on the manifest's captions, saved in --output")
    p.add_argument("--workers", type=int, default=1, help="processes (each on its own GPU when there are several)")
    p.add_argument("--fps", type=float, default=12.0, help="sampled frame rate (official 12)")
    p.add_argument("--duration", type=float, default=2.0,
                   help="seconds per clip, centred; shorter clips are skipped (official 7 at 12 fps)")
    p.add_argument("--resolution", type=int, default=256,
                   help="crop-size target: 256 → 320x192, 352 → 448x256, 528 → 672x384 (16:9 sources)")
    p.add_argument("--sampling", choices=("exact", "official"), default="exact",
                   help="frame timing: exact fps (default) or the official frame-step rule (30-fps quirk)")
    p.add_argument("--backend", default="auto", help="decoder: auto, pyav, dali_cpu or dali_gpu")
    p.add_argument("--shard-size", type=int, default=256, help="samples per shard (the unit of resume)")
    p.add_argument("--vocab-size", type=int, default=129536, help="unified vocabulary size of the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); usage errors exit with status 2."""
    return build_parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``lumos-pretokenize``; returns the exit status (0 done, 2 unusable arguments or a full disk)."""
    args = parse_args(argv)
    from lumos_megatron.data.manifest import ManifestError, read_manifest
    from lumos_megatron.data.pretokenize import (
        PretokenizeSettings,
        default_text_tokenizer,
        default_video_tokenizer,
        pretokenize,
    )

    if args.workers < 1 or args.shard_size < 1:
        return fail(PROG, "--workers and --shard-size must be >= 1")
    try:
        text, video = args.text_tokenizer, args.video_tokenizer
        if not text or not video:
            entries = read_manifest(args.manifest)
            os.makedirs(args.output, exist_ok=True)
        if not text:
            text = default_text_tokenizer(entries, args.output)
        if not video:
            video = default_video_tokenizer(args.output)
            print(f"{PROG}: no --video-tokenizer: using an untrained FSQ tokenizer ({video}); its codes "
                  "carry no meaning, so train on them only to test the pipeline", file=sys.stderr)
        settings = PretokenizeSettings(
            manifest=os.path.abspath(args.manifest), output=args.output,
            video_tokenizer=video, text_tokenizer=text, fps=args.fps,
            duration=args.duration, resolution=args.resolution, sampling=args.sampling,
            backend=args.backend, shard_size=args.shard_size, vocab_size=args.vocab_size)
        counts = pretokenize(settings, workers=args.workers, progress=not args.no_progress)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        return fail(PROG, e)
    except OSError as e:
        from lumos_megatron.platform.disk_space import is_no_space, no_space_message

        if not is_no_space(e):
            raise
        # The shard being written was aborted (removed); complete shards stay and a re-run resumes.
        shards = [os.path.join(args.output, n) for n in os.listdir(args.output) if n.endswith(".bin")]
        need = max((os.path.getsize(p) for p in shards), default=0)
        return fail(PROG, f"{no_space_message(args.output, need)} (for the next shard); the partial shard "
                          "was removed, and a re-run resumes after the complete ones")
    print(f"{PROG}: {counts['samples']} samples in {counts['shards']} shards under {args.output}; "
          f"{counts['skipped']} skipped (see {os.path.join(args.output, 'skipped.jsonl')})")
    return 0


if __name__ == "__main__":
    run(main)
