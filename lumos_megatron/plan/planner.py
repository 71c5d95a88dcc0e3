"""The planner's orchestration: one worker process per rank kind, their reports merged into the plan.

:func:`plan_training` resolves the layout, picks the rank kinds (``plan.rank_kinds``), traces each
in a worker on fake CUDA (``plan.worker``, started with the fake device preloaded), applies the
calibration to each peak (``plan.calibration.verdict``) and returns the JSON document ``lumos-plan
--json`` writes. :func:`plan_generation` does the same for the last frame's decoding step, and
:func:`plan_sweep` for every layout of a world size (``plan.layouts``), ranked by estimated step
time (``plan.step_time``) among those that fit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lumos_megatron.config.schema import LumosConfig
from lumos_megatron.plan.calibration import Calibration, communicator_count, load_calibration, verdict
from lumos_megatron.plan.gpus import GpuSpec
from lumos_megatron.plan.rank_kinds import rank_kinds
from lumos_megatron.plan.worst_case import planned_streams, tokens_per_sample_note

Progress = Callable[[str], None]


class PlanError(RuntimeError):
    """A trace failed; the message names the rank kind and the error, the worker's traceback follows."""


def run_workers(specs: Sequence[Dict], jobs: int = 1, progress: Optional[Progress] = None) -> List[Dict]:
    """Run one worker per spec (at most ``jobs`` at once); their reports in the order of ``specs``.
    Raises :class:`PlanError` for the first that failed."""
    from lumos_megatron.plan.fake_device import worker_environment

    env = worker_environment()

    def one(spec: Dict) -> Dict:
        with tempfile.TemporaryDirectory(prefix="lumos-plan-") as tmp:
            spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "report.json"
            spec_path.write_text(json.dumps(spec))
            proc = subprocess.run([sys.executable, "-m", "lumos_megatron.plan.worker", str(spec_path), str(out_path)],
                                  env=env, capture_output=True, text=True)
            if not out_path.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
                return {"error": f"worker exited with status {proc.returncode}", "traceback": "\n".join(tail)}
            result = json.loads(out_path.read_text())
        if progress is not None and "error" not in result:
            progress(f"traced {spec['role']} in {result.get('trace_seconds', 0):.1f} s")
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, specs))
    for spec, result in zip(specs, results):
        if "error" in result:
            raise PlanError(f"tracing {spec['role']} failed: {result['error']}\n{result.get('traceback', '')}")
    return results


def merged_host_syncs(reports: Sequence[Dict]) -> List[Dict]:
    """Host syncs of all traced ranks, one entry per (where, op) with the largest per-rank count."""
    merged: Dict[tuple, Dict] = {}
    for report in reports:
        for sync in report.get("host_syncs", []):
            key = (sync["where"], sync["op"])
            if key not in merged or sync["count"] > merged[key]["count"]:
                merged[key] = dict(sync)
    return sorted(merged.values(), key=lambda s: (-s["count"], s["where"], s["op"]))


def _calibration_json(c: Calibration) -> Dict:
    fields = {k: v for k, v in asdict(c).items() if k != "measured"}
    return {**fields, "status": {k: c.status(k) for k in fields}}


def _layout_json(cfg: LumosConfig, layout) -> Dict:
    p = cfg.parallel
    return {"tp": layout.tp, "pp": layout.pp, "vpp": layout.vpp, "cp": layout.cp, "dp": layout.dp,
            "sequence_parallel": p.sequence_parallel, "use_distributed_optimizer": p.use_distributed_optimizer,
            "recompute": cfg.model.recompute_granularity or "none", "attention_backend": cfg.model.attention_backend,
            "precision": cfg.train.precision}


def plan_training(argv: Sequence[str], cfg: LumosConfig, world_size: int, gpu: GpuSpec, *,
                  sdpa_kernel: str = "auto", jobs: int = 1, calibration: Optional[Calibration] = None,
                  progress: Optional[Progress] = None) -> Dict:
    """The training plan of ``cfg`` (parsed from ``argv``) at ``world_size`` GPUs of ``gpu``."""
    from lumos_megatron.platform.parallel import resolve_layout
    from lumos_megatron.vocab import LumosVocab

    calibration = calibration or load_calibration()
    layout = resolve_layout(cfg, world_size)
    kinds = rank_kinds(layout, LumosVocab(vocab_size=cfg.model.vocab_size))
    streams = planned_streams(cfg, layout.dp, layout.pp, layout.vpp)
    specs = [{"argv": list(argv), "world_size": world_size, "rank": k.rank, "role": k.role,
              "device_name": f"fake {gpu.name}", "capacity_bytes": gpu.memory_bytes,
              "sdpa_kernel": sdpa_kernel} for k in kinds]
    if progress is not None:
        progress(f"tracing {len(specs)} rank kind(s) of TP{layout.tp} PP{layout.pp} CP{layout.cp} DP{layout.dp} "
                 f"on fake {gpu.name}: " + "; ".join(tokens_per_sample_note(s) for s in streams))
    reports = run_workers(specs, jobs, progress)
    communicators = communicator_count(layout.tp, layout.pp, layout.cp, layout.dp)
    uses_flex = cfg.model.attention_backend == "flex"
    for kind, report in zip(kinds, reports):
        expected = {"pp": kind.pp_rank, "tp": kind.tp_rank, "cp": kind.cp_rank, "dp": 0}
        if report.get("coordinates") and report["coordinates"] != expected:
            raise PlanError(f"{kind.role}: rank {kind.rank} came out as {report['coordinates']} "
                            f"(expected {expected}); megatron's rank order differs from the planner's")
        v = verdict(report["peak_bytes"], gpu.memory_bytes, communicators, uses_flex, calibration)
        report["verdict"] = v.to_json()
        report["fits"] = v.fits
    return {
        "world_size": world_size, "argv": list(argv), "gpu": asdict(gpu), "layout": _layout_json(cfg, layout),
        "streams": [asdict(s) for s in streams], "sdpa_kernel": sdpa_kernel,
        "calibration": _calibration_json(calibration), "ranks": reports,
        "fits": all(r["fits"] for r in reports), "host_syncs": merged_host_syncs(reports),
    }


def plan_generation(argv: Sequence[str], cfg: LumosConfig, world_size: int, gpu: GpuSpec, shape, *,
                    sdpa_kernel: str = "auto", calibration: Optional[Calibration] = None,
                    progress: Optional[Progress] = None) -> Dict:
    """The generation plan: TP over ``world_size`` GPUs (every TP rank holds the same shapes, so
    rank 0 is traced), one entry per batch size with its verdict."""
    calibration = calibration or load_calibration()
    spec = {"argv": list(argv), "world_size": world_size, "rank": 0, "role": f"generation TP 0/{world_size}",
            "device_name": f"fake {gpu.name}", "capacity_bytes": gpu.memory_bytes, "sdpa_kernel": sdpa_kernel,
            "mode": "generate", "generate": {"grid": list(shape.grid), "frames": shape.frames,
                                             "prompt_tokens": shape.prompt_tokens,
                                             "batch_sizes": list(shape.batch_sizes)}}
    if progress is not None:
        progress(f"tracing the last frame's decoding step ({shape.frames} frames of {shape.grid[0]}x{shape.grid[1]}) "
                 f"at batch sizes {', '.join(map(str, shape.batch_sizes))}")
    report = run_workers([spec], 1, progress)[0]
    communicators = communicator_count(world_size, 1, 1, 1)
    for entry in report["batches"]:
        v = verdict(entry["peak_bytes"], gpu.memory_bytes, communicators, False, calibration)
        entry["verdict"] = v.to_json()
        entry["fits"] = v.fits
    ranks = [{"role": f"{report['role']} batch {b['batch_size']}", "rank": 0, "peak_bytes": b["peak_bytes"],
              "parameter_bytes": report["parameter_bytes"], "gradient_bytes": 0, "optimizer_bytes": 0,
              "activation_bytes": b["step_bytes"], "kv_cache_bytes": b["kv_cache_bytes"],
              "verdict": b["verdict"], "fits": b["fits"]} for b in report["batches"]]
    return {"world_size": world_size, "argv": list(argv), "gpu": asdict(gpu), "mode": "generate",
            "generation": report, "sdpa_kernel": sdpa_kernel, "calibration": _calibration_json(calibration),
            "ranks": ranks, "host_syncs": report["host_syncs"]}


def _needs_at_least(candidate, other, activations_alone_too_big: bool) -> bool:
    """Whether ``candidate`` holds at least as much per rank as ``other``, which does not fit (so
    neither does it): the same recompute, no more TP or CP, and no more PP, or any PP when
    ``other``'s activations alone do not fit. Per-rank model state shrinks with TP and PP (and is
    independent of CP under the distributed optimizer, which shards over DP x CP), activations
    with TP and CP, while 1F1B's first stage keeps about one model's worth of layer activations
    whatever PP is (interleaving adds to it). A heuristic that only saves traces."""
    return (candidate.recompute == other.recompute and candidate.tp <= other.tp and candidate.cp <= other.cp
            and (candidate.pp <= other.pp or activations_alone_too_big))


def plan_sweep(argv: Sequence[str], cfg: LumosConfig, world_size: int, gpu: GpuSpec, *, gpus_per_node: int,
               trace_top: int, max_traces: Optional[int] = None, sdpa_kernel: str = "auto", jobs: int = 1,
               calibration: Optional[Calibration] = None, progress: Optional[Progress] = None,
               trace_cache: Optional[Dict] = None) -> Dict:
    """Every layout of ``world_size`` the recipe allows (with and without recompute), ranked:
    fitting by estimated step time first.

    Layouts are traced in order of estimated step time until ``trace_top`` of them fit (or
    ``max_traces``, default 3 x ``trace_top``, have been traced); the rest are listed untraced.
    A layout that needs at least as much memory as one that did not fit (:func:`_needs_at_least`)
    is not traced and listed as not fitting.
    ``trace_cache`` (a dict the caller keeps) reuses traces across calls, e.g. for another GPU:
    a trace does not depend on the GPU, only its verdict does.
    """
    from lumos_megatron.plan.layouts import apply_candidate, candidate_layouts, rejected_layouts
    from lumos_megatron.plan.step_time import estimate_step_time
    from lumos_megatron.plan.sweep_table import SweepRow, format_sweep_table, sweep_json

    calibration = calibration or load_calibration()
    max_traces = 3 * trace_top if max_traces is None else max_traces
    cache = {} if trace_cache is None else trace_cache
    candidates = candidate_layouts(cfg, world_size, gpus_per_node=gpus_per_node, with_recompute_variants=True)
    timed = sorted(((c, estimate_step_time(cfg, c, gpu)) for c in candidates), key=lambda ct: ct[1].total_s)
    rows, fitting, traced, too_big = [], 0, 0, []
    for candidate, step in timed:
        if fitting >= trace_top or traced >= max_traces:
            rows.append(SweepRow(candidate, step, None, None, "not traced"))
            continue
        bigger = next((c for c, act in too_big if _needs_at_least(candidate, c, act)), None)
        if bigger is not None:
            rows.append(SweepRow(candidate, step, None, False, f"not traced: needs at least {bigger.label}"))
            continue
        key = (tuple(argv) + tuple(candidate.overrides), world_size, sdpa_kernel)
        if key not in cache:
            try:
                cache[key] = plan_training(list(key[0]), apply_candidate(cfg, candidate), world_size, gpu,
                                           sdpa_kernel=sdpa_kernel, jobs=jobs, calibration=calibration,
                                           progress=progress)
            except PlanError as err:
                cache[key] = {"error": str(err).splitlines()[0][:120]}
        traced += 1
        plan = cache[key]
        if "error" in plan:
            rows.append(SweepRow(candidate, step, None, None, plan["error"]))
            continue
        communicators = communicator_count(candidate.tp, candidate.pp, candidate.cp, candidate.dp)
        verdicts = [(verdict(r["peak_bytes"], gpu.memory_bytes, communicators,
                             cfg.model.attention_backend == "flex", calibration), r) for r in plan["ranks"]]
        worst, worst_rank = max(verdicts, key=lambda vr: vr[0].required_bytes)
        fits = all(v.fits for v, _ in verdicts)
        fitting += fits
        if not fits:
            activations = max(r["peak_bytes"] - r["parameter_bytes"] - r["gradient_bytes"] - r["optimizer_bytes"]
                              for r in plan["ranks"])
            alone = verdict(activations, gpu.memory_bytes, communicators, cfg.model.attention_backend == "flex",
                            calibration)
            too_big.append((candidate, not alone.fits))
        rows.append(SweepRow(candidate, step, worst.required_bytes, fits,
                             f"worst: {worst_rank['role'].split(' (')[0]}"))
    out = sweep_json(rows, gpu)
    out["table"] = format_sweep_table(rows, gpu)
    out["rejected"] = [{"label": r.label, "reason": r.reason}
                       for r in rejected_layouts(cfg, world_size, gpus_per_node=gpus_per_node)]
    out["world_size"], out["argv"] = world_size, list(argv)
    out["calibration"] = _calibration_json(calibration)
    return out
