"""A planner worker: one rank kind traced on fake CUDA, in its own process.

``python -m lumos_megatron.plan.worker SPEC.json OUT.json`` — started by the planner
(``plan.cli``) with the fake CUDA device library preloaded (``plan.fake_device``). The spec names
the recipe arguments, the world size, the rank and its role; the output is the rank's
:class:`~lumos_megatron.plan.step_trace.RankReport` as JSON, or ``{"error": "..."}``.
One process per rank: megatron's parallel state and the fake process group are per process.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path


def run(spec: dict) -> dict:
    """Trace the rank ``spec`` describes; returns the report dict."""
    from lumos_megatron.config import parse_cli
    from lumos_megatron.plan.fake_mode import check_versions, fake_cuda_session, init_fake_process_group

    check_versions()
    cfg = parse_cli(list(spec["argv"]), validate=False)
    world_size, rank = int(spec["world_size"]), int(spec["rank"])
    with fake_cuda_session(device_name=spec.get("device_name", "fake GPU"),
                           total_memory=int(spec.get("capacity_bytes", 80 * 2**30))):
        init_fake_process_group(rank, world_size)
        if spec.get("mode") == "generate":
            from lumos_megatron.plan.generation_trace import GenerationShape, trace_generation

            g = spec["generate"]
            shape = GenerationShape(tuple(g["grid"]), int(g["frames"]), int(g["prompt_tokens"]),
                                    tuple(g["batch_sizes"]))
            return trace_generation(cfg, world_size, rank, shape, spec.get("sdpa_kernel", "auto")).to_json()
        from lumos_megatron.plan.step_trace import trace_rank

        return trace_rank(cfg, world_size, rank, spec["role"], fake=True,
                          sdpa_kernel=spec.get("sdpa_kernel", "auto")).to_json()


def main(argv=None) -> int:
    """Entry point; exit status 0 on success, 1 with ``{"error": ...}`` written otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    warnings.filterwarnings("ignore")
    try:
        result = run(spec)
        status = 0
    except Exception as err:  # the parent reports it with the rank's role
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        status = 1
    Path(out_path).write_text(json.dumps(result, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
