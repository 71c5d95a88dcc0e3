"""The ``lumos-convert`` and ``lumos-inspect`` commands (also ``tools/checkpoint/convert.py`` and
``tools/checkpoint/inspect.py``).

Bad input exits with status 2 and one line on stderr (argparse's own usage errors too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from lumos_megatron.cli.base import CommandParser


def _fail(prog: str, err: Exception) -> int:
    from lumos_megatron.checkpoint.directory import with_step_hint

    print(f"{prog}: error: {with_step_hint(err, '--iteration')}", file=sys.stderr)
    return 2


def _need_bytes(args) -> int:
    """About how much the conversion writes: the source safetensors (import), or the model
    tensors of the checkpoint in the written dtype (export)."""
    import torch

    from lumos_megatron.platform.disk_space import directory_bytes

    try:
        if args.command == "import-hf":
            return sum(directory_bytes(p) for p in Path(args.hf_dir).glob("*.safetensors"))
        from lumos_megatron.conversion.export_hf import DTYPES
        from lumos_megatron.conversion.inspect_checkpoint import summarize

        summary = summarize(args.load, args.iteration)
        if args.dtype:
            return summary["parameters"]["total"] * DTYPES[args.dtype].itemsize
        return sum(n * getattr(torch, name).itemsize for name, n in summary["dtypes"].items())
    except Exception:  # only an estimate for the message
        return 0


def _convert_parser() -> argparse.ArgumentParser:
    parser = CommandParser("lumos-convert", "Convert checkpoints between the official Lumos-1 (Hugging "
                           "Face) layout and torch_dist.", examples=[
                               "lumos-convert import-hf --hf-dir Lumos-1-1B --out ckpt/lumos_1b",
                               "lumos-convert export-hf --load ckpt/run --out export/run --dtype bf16"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    imp = sub.add_parser("import-hf", help="official safetensors → torch_dist checkpoint root")
    imp.add_argument("--hf-dir", required=True, help="directory with config.json and safetensors")
    imp.add_argument("--out", required=True, help="checkpoint root to create (must be empty)")
    imp.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="stored dtype")
    imp.add_argument("--target-vocab-size", type=int, default=None,
                     help="grow embedding and head to this many rows (e.g. 129536 from a 65,536-id Chameleon)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the grown rows")
    imp.add_argument("--zero-head-rows", default=None, metavar="A:B",
                     help="zero LM-head rows [A, B) (the official starting point zeroes Chameleon's image ids)")
    imp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    exp = sub.add_parser("export-hf", help="torch_dist checkpoint → official safetensors")
    exp.add_argument("--load", required=True, help="checkpoint root (or one iter_* directory)")
    exp.add_argument("--out", required=True, help="directory to create (must be empty)")
    exp.add_argument("--iteration", type=int, default=None, help="iteration to export (default: latest)")
    exp.add_argument("--shard-size", default="5GB", help="largest safetensors shard (e.g. 5GB, 500MB)")
    exp.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                     help="written dtype (default: as stored)")
    exp.add_argument("--force", action="store_true", help="replace a non-empty --out")
    exp.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def convert_main(argv: Optional[List[str]] = None) -> int:
    """``convert.py import-hf|export-hf ...``; returns the exit status."""
    args = _convert_parser().parse_args(argv)
    from lumos_megatron.checkpoint.directory import CheckpointError
    from lumos_megatron.conversion.errors import ConversionError

    prog = f"lumos-convert {args.command}"
    try:
        if args.command == "import-hf":
            from lumos_megatron.conversion.import_hf import import_hf, parse_row_range

            zero = parse_row_range(args.zero_head_rows) if args.zero_head_rows else None
            path = import_hf(args.hf_dir, args.out, dtype=args.dtype, target_vocab_size=args.target_vocab_size,
                             seed=args.seed, zero_head_rows=zero, force=args.force,
                             progress=not args.no_progress)
            print(f"{prog}: wrote {path} (train from it with: python -m lumos_megatron.train "
                  f"--config {path}/run_config.yaml)")
        else:
            from lumos_megatron.conversion.export_hf import export_hf

            path = export_hf(args.load, args.out, iteration=args.iteration, shard_size=args.shard_size,
                             dtype=args.dtype, force=args.force, progress=not args.no_progress)
            print(f"{prog}: wrote {path}")
    except (ConversionError, CheckpointError) as err:
        return _fail(prog, err)
    except OSError as err:
        from lumos_megatron.platform.disk_space import is_no_space, no_space_message

        if not is_no_space(err):
            raise
        # staged_output has removed the partial output already.
        print(f"{prog}: error: {no_space_message(Path(args.out).parent, _need_bytes(args))}; nothing was "
              f"written to {args.out}", file=sys.stderr)
        return 2
    return 0


def inspect_main(argv: Optional[List[str]] = None) -> int:
    """``inspect.py C [--iteration N] [--json]``; returns the exit status."""
    parser = CommandParser("lumos-inspect", "Summarise a torch_dist checkpoint.", examples=[
        "lumos-inspect ckpt/lumos_1b", "lumos-inspect ckpt/run --iteration 2000 --json",
        "lumos-inspect ckpt/run --verify"])
    parser.add_argument("checkpoint", help="checkpoint root (or one iter_* directory)")
    parser.add_argument("--iteration", type=int, default=None, help="iteration (default: latest)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--verify", choices=("full", "size"), nargs="?", const="full", default=None,
                        help="check every file against the checkpoint's manifest (full: sizes and SHA-256; "
                             "size: sizes only); exit 2 naming the first bad file")
    args = parser.parse_args(argv)
    from lumos_megatron.checkpoint.directory import CheckpointError
    from lumos_megatron.conversion.errors import ConversionError
    from lumos_megatron.conversion.inspect_checkpoint import format_summary, summarize, verify_checkpoint

    try:
        summary = summarize(args.checkpoint, args.iteration)
        if args.verify:
            summary["verification"] = verify_checkpoint(summary["path"], args.verify)
    except (ConversionError, CheckpointError) as err:
        return _fail("lumos-inspect", err)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    problems = (summary.get("verification") or {}).get("problems")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return _fail("lumos-inspect", CheckpointError(f"checkpoint {summary['path']} failed verification: "
                                                   f"{problems[0]}{more}", earlier_step=True))
    return 0
