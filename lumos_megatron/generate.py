"""Entry point: ``python -m lumos_megatron.generate`` (also ``lumos-generate``): prompts → videos.

    python -m lumos_megatron.generate --load C [--video-tokenizer SPEC] [--text-tokenizer SPEC]
        --task t2i|t2v|i2v (--prompt TEXT [--image PATH] | --prompts FILE) --out DIR
        [--resolution 352|WxH] [--fps 12] [--duration 2] [--steps 50] [--cfg G]
        [--history-mask-ratio 0.7] [--seed 0] [--batch-size 1] [--temperature-schedule official]
        [--no-kv-cache] [--dtype fp32|bf16] [--device cpu|cuda] [--attention-backend sdpa|flex|te_bias]
        [--overwrite]
    torchrun --nproc-per-node N -m lumos_megatron.generate --tensor-model-parallel-size t ...

The tokenizers default to the ones the checkpoint's training run recorded (``data.video_tokenizer``
and ``data.text_tokenizer`` of its ``run_config.yaml``). Per sample ``DIR/sample_NNNNN.{mp4,gif,png,json}``
(the JSON, written last, holds every setting, the generated token ids, and the sample's determinants
with their sha256 ``determinants_hash``); a re-run skips samples whose JSON records the same hash and
refuses (exit 2, one line) a sample generated with other settings unless ``--overwrite`` is given,
which regenerates it. Bad prompt-file lines and unreadable images are listed in ``DIR/skipped.jsonl``
and the other samples still run; ``DIR/index.jsonl`` lists every finished sample. Under torchrun
the N ranks form N/t data-parallel groups of t tensor-parallel ranks (t defaults to N); the groups
share the prompts, and each group's first rank writes its samples.
Exit status: 0 done (skipped prompts are listed, not fatal), 2 bad input or a stale --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from lumos_megatron.cli.base import CommandParser


def _parser() -> argparse.ArgumentParser:
    p = CommandParser("lumos_megatron.generate", "AR-DF generation: prompts → videos (also lumos-generate).", examples=[
        'lumos-generate --load ckpt/lumos_1b --task t2v --prompt "a red ball rolls on the grass" --out samples/t2v',
        "lumos-generate --load ckpt/lumos_1b --task i2v --prompts prompts.jsonl --out samples/i2v --steps 50",
        "torchrun --nproc-per-node 8 -m lumos_megatron.generate --load ckpt --prompts p.txt --out samples "
        "--tensor-model-parallel-size 2"])
    p.add_argument("--load", required=True, help="checkpoint root or iter_* directory")
    p.add_argument("--video-tokenizer", help="cosmos:DIR or fsq:CKPT.pt (default: the checkpoint's "
                                             "data.video_tokenizer)")
    p.add_argument("--text-tokenizer", help="hf:tokenizer.json or sp:MODEL.model (default: the checkpoint's "
                                            "data.text_tokenizer)")
    p.add_argument("--task", choices=["t2i", "t2v", "i2v"], default="t2v")
    p.add_argument("--prompt", help="one caption")
    p.add_argument("--image", help="I2V conditioning image of --prompt")
    p.add_argument("--prompts", help="prompt file: text (one per line) or JSONL {prompt, image?, seed?}")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resolution", default=None, help="target size (352, 528, 656) or WxH; T2I default 448x256")
    p.add_argument("--fps", type=int, default=None, help="frames per second (T2V/I2V; default 12)")
    p.add_argument("--duration", type=int, default=None, help="seconds (T2V/I2V; default 2)")
    p.add_argument("--steps", type=int, default=50, help="decoding steps per latent frame")
    p.add_argument("--cfg", type=float, default=None, help="guidance scale (T2V/I2V 15, T2I 16)")
    p.add_argument("--history-mask-ratio", type=float, default=0.7, help="ρ_inf of the cached history")
    p.add_argument("--temperature-schedule", choices=["official", "per_frame"], default="official")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i unless its JSONL line has one")
    p.add_argument("--batch-size", type=int, default=1, help="prompts decoded together (same frame size)")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole context every step")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="compute dtype (default: bf16 on GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: this rank's GPU, else the CPU)")
    p.add_argument("--sample-device", choices=["model", "cpu"], default="model",
                   help="where each sample's generator draws: the model's device (the logits stay there) or "
                        "the CPU (reproduces CPU-seeded tokens on any machine; copies the logits to the host)")
    p.add_argument("--attention-backend", default=None,
                   help="sdpa, flex or te_bias (default: the checkpoint's model.attention_backend)")
    p.add_argument("--tensor-model-parallel-size", type=int, default=None,
                   help="ranks per model copy under torchrun (default: all); the N/t copies share the prompts")
    p.add_argument("--overwrite", action="store_true",
                   help="regenerate samples in --out that were generated with other settings (checkpoint, "
                        "prompt, seed, sampler, ...); without it such a re-run is refused with exit status 2, "
                        "while samples of identical settings are always skipped (resume)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Parse, load, generate; returns the exit status."""
    args = _parser().parse_args(argv)
    # megatron-core's notices about optional fused kernels and a deprecated scope name it uses
    # itself: nothing a user of this command can act on.
    from lumos_megatron.inference.run import GenerationRun, GenerationSetupError, NoSpaceForOutput

    try:
        run = GenerationRun.from_args(args)
    except GenerationSetupError as err:
        print(f"lumos_megatron.generate: error: {err}", file=sys.stderr)
        return 2
    try:
        written, skipped = run.run()
    except NoSpaceForOutput as err:
        print(f"lumos_megatron.generate: error: {err}", file=sys.stderr)
        return 2
    finally:
        run.close()
    if args.prompt and skipped:  # the one prompt could not be used: say why
        if run.is_main:
            print(f"lumos_megatron.generate: error: {skipped[0]['reason']}", file=sys.stderr)
        return 2
    if run.is_main:
        print(json.dumps({"written": written, "skipped": len(skipped), "out": str(Path(args.out))}))
    return 0


if __name__ == "__main__":  # the checkpoint loader spawns helpers that re-import __main__
    sys.exit(main())
