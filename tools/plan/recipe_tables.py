"""The recipe tables of docs/planning.md: layout sweeps of the shipped recipes at 8, 16 and 64 GPUs.

    python tools/plan/recipe_tables.py --out plan_tables.json > tables.md

For each (recipe, world size) it runs ``lumos-plan --sweep``'s code for an 80 GB H100; the same
required bytes give the 141 GB H200's verdict (a trace does not depend on the GPU).
The global batch is scaled with the world size (the recipes' 8-GPU batch x world / 8: the same
work per GPU), since the 8-GPU batch rarely divides over 64 GPUs. Prints one markdown table per
recipe: the layouts traced, each rank kind's worst required memory, the verdicts and the
estimated step time. Takes about a minute per traced layout on two cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "examples" / "recipes"
SEVEN_B = ["model.num_layers=32", "model.hidden_size=4096", "model.ffn_hidden_size=11008",
           "model.num_attention_heads=32", "model.num_query_groups=8"]
"""A Llama-2-7B-like decoder on the 3B recipe's data and training settings."""
SHAPES = {
    "1B 384p": [str(RECIPES / "lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml")],
    "3B 384p": [str(RECIPES / "lumos_3b_stage2-joint-384p_8gpu_h100_bf16.yaml")],
    "7B-like 384p": [str(RECIPES / "lumos_3b_stage2-joint-384p_8gpu_h100_bf16.yaml"), *SEVEN_B],
}


def main(argv=None) -> int:
    """Run the sweeps; markdown to stdout, everything to ``--out`` as JSON."""
    from lumos_megatron.config import parse_cli
    from lumos_megatron.plan.gpus import GIB, gpu_spec
    from lumos_megatron.plan.planner import plan_sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), help=f"of {list(SHAPES)}")
    p.add_argument("--worlds", nargs="*", type=int, default=[8, 16, 64])
    p.add_argument("--trace-top", type=int, default=2, help="stop tracing once this many fit 80 GB")
    p.add_argument("--max-traces", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="plan_tables.json")
    args = p.parse_args(argv)
    results = {}
    for shape in args.shapes:
        recipe, *overrides = SHAPES[shape]
        print(f"\n#### {shape}\n")
        print("| GPUs | layout | recompute | worst rank | required GiB | 80 GB | 141 GB | est. step s |")
        print("|---|---|---|---|---|---|---|---|")
        for world in args.worlds:
            base = parse_cli(["--config", recipe, *overrides], validate=False)
            batch = base.train.global_batch_size * world // 8
            recipe_argv = ["--config", recipe, *overrides, f"train.global_batch_size={batch}"]
            cfg = parse_cli(recipe_argv)
            started = time.perf_counter()
            sweep = plan_sweep(recipe_argv, cfg, world, gpu_spec("h100"), gpus_per_node=8,
                               trace_top=args.trace_top, max_traces=args.max_traces, jobs=args.jobs,
                               progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
            results[f"{shape} @ {world}"] = {"argv": recipe_argv, "sweep": sweep,
                                             "seconds": time.perf_counter() - started}
            for row in sweep["rows"]:
                if row["peak_bytes"] is None:
                    continue
                # The required bytes do not depend on the GPU (same allowances): one trace, two verdicts.
                fits141 = "yes" if row["peak_bytes"] <= gpu_spec("h200").memory_bytes else "no"
                fits80 = "yes" if row["fits"] else "no"
                layout = row["label"].rsplit(" ", 1)[0]
                print(f"| {world} | {layout} | {row['recompute']} | {row['note'].replace('worst: ', '')} | "
                      f"{row['peak_bytes'] / GIB:.1f} | {fits80} | {fits141} | {row['step_time']['total_s']:.2f} |",
                      flush=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
