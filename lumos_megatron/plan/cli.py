"""``lumos-plan`` / ``python -m lumos_megatron.plan``: plan a recipe's memory before renting GPUs.

    lumos-plan --config RECIPE [section.field=value ...] [Megatron flags] --world-size W --json OUT
    lumos-plan --config RECIPE --nodes 8 --gpus-per-node 8 --gpu h200 --sweep
    lumos-plan --config RECIPE --world-size 2 --generate --gen-batch 1,2,4

Recipe arguments are exactly the ones ``train`` takes. The world size is ``--world-size`` or
``--nodes`` x ``--gpus-per-node``. Exit status: 0 when every traced rank fits the GPU, 3 when
one does not, 2 for bad arguments or a configuration the trainer would refuse, 1 when a trace
failed (the worker's traceback is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lumos_megatron.cli.base import CommandParser

GIB = 2**30


def build_parser() -> argparse.ArgumentParser:
    """The planner's own flags; every other argument is a recipe argument for ``parse_cli``."""
    p = CommandParser(
        "lumos-plan", allow_abbrev=False,
        description="Trace one training step (or one generation step) of a recipe on a fake CUDA device "
                    "and a fake process group, and report each rank kind's peak memory, the host syncs and "
                    "whether it fits the GPU. Other arguments (section.field=value, Megatron flags) are "
                    "the recipe's, as `train` takes them. Exit status: 0 all ranks fit; 3 a rank does not "
                    "fit; 2 bad arguments/config; 1 a trace failed.",
        examples=["lumos-plan --config examples/recipes/lumos_1b_stage2-joint-384p_8gpu_h100_bf16.yaml --world-size 8",
                  "lumos-plan --config RECIPE --world-size 64 --gpu h200 --sweep",
                  "lumos-plan --config RECIPE --world-size 1 --generate --gen-batch 1,4"])
    p.add_argument("--config", help="the recipe YAML (as train --config)")
    p.add_argument("--world-size", type=int, help="GPUs of the run (or --nodes x --gpus-per-node)")
    p.add_argument("--nodes", type=int, help="nodes of the run (with --gpus-per-node)")
    p.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per node (default: the GPU's node size, 8)")
    p.add_argument("--gpu", default="h100", help="h100 | h200 | a100 | b200: capacity for the verdict, peak "
                   "FLOP/s and links for the sweep's step time (default h100)")
    p.add_argument("--json", dest="json_out", help="write the plan as JSON to this path")
    p.add_argument("--sweep", action="store_true", help="every layout of the world size, ranked among those that fit")
    p.add_argument("--trace-top", type=int, default=3,
                   help="with --sweep: trace layouts in order of estimated step time until N fit (default 3)")
    p.add_argument("--max-traces", type=int, default=None,
                   help="with --sweep: trace at most this many layouts (default 3 x --trace-top)")
    p.add_argument("--generate", action="store_true",
                   help="plan generation instead: the last frame's AR-DF decoding step with its KV cache")
    p.add_argument("--gen-batch", default="1,2,4,8", help="with --generate: batch sizes (samples; each has a "
                   "conditional and an unconditional row), default 1,2,4,8")
    p.add_argument("--gen-grid", help="with --generate: latent grid ROWSxCOLS (default: the recipe's largest)")
    p.add_argument("--gen-frames", type=int, help="with --generate: latent frames (default: the recipe's)")
    p.add_argument("--gen-prompt-tokens", type=int, default=128, help="with --generate: caption tokens (128)")
    p.add_argument("--sdpa-kernel", default="auto", choices=("auto", "math", "efficient"),
                   help="which CUDA SDPA kernel the trace models for masked calls (auto: the calibration's)")
    p.add_argument("--jobs", type=int, default=None, help="rank kinds traced at once (default: CPU count, max 4)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _recipe_argv(args: argparse.Namespace, rest: List[str]) -> List[str]:
    return (["--config", args.config] if args.config else []) + list(rest)


def _world_size(args: argparse.Namespace, gpu) -> int:
    if args.world_size is not None and args.nodes is not None:
        raise ValueError("give --world-size or --nodes (with --gpus-per-node), not both")
    if args.world_size is not None:
        size = args.world_size
    elif args.nodes is not None:
        size = args.nodes * (args.gpus_per_node or gpu.gpus_per_node)
    else:
        raise ValueError("give --world-size W or --nodes N [--gpus-per-node G]")
    if size < 1:
        raise ValueError(f"world size must be >= 1, got {size}")
    return size


def _gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def format_training_plan(plan: Dict) -> str:
    """The training plan as a text report: one line per rank kind, the syncs, the assumptions."""
    lay, gpu = plan["layout"], plan["gpu"]
    lines = [f"lumos-plan: {plan['world_size']} x {gpu['name']} ({gpu['memory_bytes'] / GIB:.1f} GiB), "
             f"TP{lay['tp']} PP{lay['pp']}{' VPP' + str(lay['vpp']) if lay['vpp'] else ''} CP{lay['cp']} DP{lay['dp']}"
             f"{' +SP' if lay['sequence_parallel'] else ''}{' +distopt' if lay['use_distributed_optimizer'] else ''}, "
             f"{lay['precision']}, {lay['attention_backend']}, recompute {lay['recompute']}"]
    header = ("rank kind", "peak", "params", "grads", "optim", "activ", "loss", "required", "fits (headroom)")
    body = []
    for r in plan["ranks"]:
        v = r["verdict"]
        body.append((f"{r['role']} [rank {r['rank']}]", _gib(r["peak_bytes"]), _gib(r["parameter_bytes"]),
                     _gib(r["gradient_bytes"]), _gib(r["optimizer_bytes"]), _gib(r["activation_bytes"]),
                     _gib(r.get("loss_bytes")), _gib(v["required_bytes"]),
                     f"{'yes' if v['fits'] else 'NO'} ({v['headroom_bytes'] / GIB:+.1f})"))
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "   (GiB)")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    for r in plan["ranks"]:
        top = ", ".join(f"{m['module']} {m['saved_bytes_per_microbatch'] / GIB:.2f}" for m in r.get("top_modules", [])[:3])
        if top:
            lines.append(f"  {r['role']}: peak in {r.get('peak_phase', '?')}; most saved per micro-batch: {top}")
    lines.append("host syncs per step (largest count over the ranks):")
    lines += [f"  {s['count']:>4} x {s['op']} at {s['where']}" for s in plan["host_syncs"]] or ["  none"]
    for r in plan["ranks"]:
        lines += [f"  {s['count']:>4} x {s['op']} at {s['where']} ({r['role']}; a device-to-host copy)"
                  for s in r.get("leaves_device", [])]
        if r.get("fp32_activations"):
            big = r["fp32_activations"][0]
            lines.append(f"  {r['role']}: {len(r['fp32_activations'])} call site(s) make fp32 activations in a bf16 "
                         f"recipe, largest {big['op']} at {big['where']} ({big['bytes'] / GIB:.2f} GiB)")
    assumed = [k for k, status in plan["calibration"]["status"].items() if status == "assumed"]
    lines.append(f"required = peak x (1 + allocator overhead) + CUDA context + NCCL buffers; assumed, not "
                 f"measured: {', '.join(assumed) or 'none'} (docs/planning.md)")
    return "\n".join(lines)


def format_generation_plan(plan: Dict) -> str:
    """The generation plan as a text report: one line per batch size."""
    rep = plan["generation"]
    lines = [f"lumos-plan --generate: TP{plan['world_size']} on {plan['gpu']['name']}, parameters "
             f"{_gib(rep['parameter_bytes'])} GiB"]
    for b in rep["batches"]:
        v = b["verdict"]
        lines.append(f"  batch {b['batch_size']:>3} ({b['rows']} rows, {b['cached_tokens']} cached + "
                     f"{b['block_tokens']} block tokens): KV cache {_gib(b['kv_cache_bytes'])}, step "
                     f"{_gib(b['step_bytes'])}, peak {_gib(b['peak_bytes'])}, required {_gib(v['required_bytes'])} GiB: "
                     f"{'fits' if v['fits'] else 'does NOT fit'} ({v['headroom_bytes'] / GIB:+.1f})")
    lines.append(f"host syncs of one decoding step (batch {rep['batches'][-1]['batch_size']}):")
    lines += [f"  {s['count']:>4} x {s['op']} at {s['where']}" for s in rep["host_syncs"]] or ["  none"]
    lines += [f"  {s['count']:>4} x {s['op']} at {s['where']} (a blocking device-to-host copy)"
              for s in rep["leaves_device"]]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``lumos-plan``."""
    from lumos_megatron.config import parse_cli
    from lumos_megatron.config.loader import ConfigError
    from lumos_megatron.config.validate import validate_config
    from lumos_megatron.plan.fake_mode import PlannerEnvironmentError, check_versions
    from lumos_megatron.plan.gpus import gpu_spec
    from lumos_megatron.plan.planner import PlanError, plan_generation, plan_sweep, plan_training
    from lumos_megatron.platform.parallel import LayoutError, resolve_layout

    args, rest = build_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    progress = None if args.quiet else (lambda msg: print(f"lumos-plan: {msg}", file=sys.stderr, flush=True))
    recipe_argv = _recipe_argv(args, rest)
    try:
        check_versions()
        gpu = gpu_spec(args.gpu)
        world_size = _world_size(args, gpu)
        cfg = parse_cli(recipe_argv, validate=False)
        validate_config(cfg)
        jobs = args.jobs or min(os.cpu_count() or 1, 4)
        if args.generate:
            from lumos_megatron.plan.generation_trace import (GenerationShape, default_shape, parse_batch_sizes,
                                                              parse_grid)

            shape = default_shape(cfg, parse_batch_sizes(args.gen_batch))
            shape = GenerationShape(parse_grid(args.gen_grid) if args.gen_grid else shape.grid,
                                    args.gen_frames or shape.frames, args.gen_prompt_tokens, shape.batch_sizes)
            plan = plan_generation(recipe_argv, cfg, world_size, gpu, shape, sdpa_kernel=args.sdpa_kernel,
                                   progress=progress)
            text = format_generation_plan(plan)
            fits = all(b["fits"] for b in plan["generation"]["batches"])
        elif args.sweep:
            plan = plan_sweep(recipe_argv, cfg, world_size, gpu,
                              gpus_per_node=args.gpus_per_node or gpu.gpus_per_node, trace_top=args.trace_top,
                              max_traces=args.max_traces,
                              sdpa_kernel=args.sdpa_kernel, jobs=jobs, progress=progress)
            text = plan["table"]
            fits = any(row["fits"] for row in plan["rows"])
        else:
            resolve_layout(cfg, world_size)  # a wrong world size is a one-line error, not a worker traceback
            plan = plan_training(recipe_argv, cfg, world_size, gpu, sdpa_kernel=args.sdpa_kernel, jobs=jobs,
                                 progress=progress)
            text = format_training_plan(plan)
            fits = plan["fits"]
    except (ConfigError, LayoutError, ValueError, PlannerEnvironmentError) as err:
        print(f"lumos-plan: error: {err}", file=sys.stderr)
        return 2
    except PlanError as err:
        print(f"lumos-plan: {err}", file=sys.stderr)
        return 1
    print(text)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(plan, indent=1))
    return 0 if fits else 3


if __name__ == "__main__":
    sys.exit(main())
