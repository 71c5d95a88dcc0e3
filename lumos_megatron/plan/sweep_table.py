"""Rank the layouts of a sweep and print them: a text table for people, a dict for JSON.

A row pairs a ``Candidate`` with its estimated ``StepTime`` and, when the planner traced it, the
per-rank peak memory and whether it fits the GPU. Layouts that fit come first, fastest first;
then those that do not fit, smallest peak first (the nearest misses, where a small change might
help); then those not traced, fastest first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from lumos_megatron.plan.gpus import GIB, GpuSpec
from lumos_megatron.plan.layouts import Candidate
from lumos_megatron.plan.step_time import StepTime


class SweepRow(NamedTuple):
    """One layout of a sweep with what is known about it."""

    candidate: Candidate
    """The layout."""
    step_time: StepTime
    """Its estimated step time."""
    peak_bytes: Optional[int]
    """Largest per-rank memory the planner requires (the traced peak with the calibration's
    allocator, CUDA-context and NCCL allowances: ``plan.calibration.verdict``); None if not traced."""
    fits: Optional[bool]
    """Whether that peak fits the GPU (the planner's verdict); None if not traced."""
    note: str = ""
    """Anything the planner wants shown (e.g. why a trace failed)."""


RowLike = Union[SweepRow, Tuple]


def _as_row(row: RowLike) -> SweepRow:
    return row if isinstance(row, SweepRow) else SweepRow(*row)


def _sort_key(row: SweepRow):
    label = row.candidate.label  # last, so equal estimates still sort the same way every time
    if row.fits is True:
        return (0, row.step_time.total_s, 0, label)
    if row.fits is False:
        peak = row.peak_bytes if row.peak_bytes is not None else float("inf")
        return (1, peak, row.step_time.total_s, label)
    return (2, row.step_time.total_s, 0, label)


def rank_candidates(rows: Iterable[RowLike]) -> List[SweepRow]:
    """The rows (``SweepRow`` or plain ``(candidate, step_time, peak_bytes, fits, note)``
    tuples) as ``SweepRow``s, best first: fitting by step time, then not fitting by peak,
    then untraced by step time."""
    return sorted((_as_row(r) for r in rows), key=_sort_key)


def headroom_gib(row: SweepRow, gpu: GpuSpec) -> Optional[float]:
    """GPU memory left above the traced peak, GiB (negative: over), or None if not traced."""
    if row.peak_bytes is None:
        return None
    return (gpu.memory_bytes - row.peak_bytes) / GIB


def _dominant(st: StepTime) -> str:
    kind = st.dominant_comm
    return "-" if kind == "none" else f"{kind} {st.comm_s[kind]:.3f}s"


def _fits_cell(row: SweepRow, gpu: GpuSpec) -> str:
    room = headroom_gib(row, gpu)
    verdict = {True: "yes", False: "NO", None: "?" if room is not None else "-"}[row.fits]
    return verdict if room is None else f"{verdict} ({room:+.1f})"


def format_sweep_table(rows: Iterable[RowLike], gpu: GpuSpec) -> str:
    """The ranked rows as a fixed-width text table (header line first)."""
    ranked = rank_candidates(rows)
    header = ("layout", "recompute", "peak GiB", "fits (headroom GiB)", "step s", "tok/s/GPU",
              "top comm", "note")
    body = []
    for r in ranked:
        st = r.step_time
        peak = "-" if r.peak_bytes is None else f"{r.peak_bytes / GIB:.1f}"
        layout = r.candidate.label.rsplit(" ", 1)[0]  # the recompute word has its own column
        body.append((layout, r.candidate.recompute, peak, _fits_cell(r, gpu), f"{st.total_s:.3f}",
                     f"{st.tokens_per_s_per_gpu:,.0f}", _dominant(st), r.note))
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    title = (f"{len(ranked)} layouts on {gpu.name} ({gpu.memory_bytes / GIB:.1f} GiB, "
             f"{gpu.bf16_dense_tflops:g} TFLOP/s bf16, {gpu.gpus_per_node} per node)")
    lines = [title, _line(header, widths), _line(tuple("-" * w for w in widths), widths)]
    lines += [_line(line, widths) for line in body]
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()


def sweep_json(rows: Iterable[RowLike], gpu: GpuSpec) -> Dict[str, Any]:
    """The ranked rows as a JSON-serialisable dict: the GPU, the step-time assumptions (shared
    by all rows) and one entry per layout, best first."""
    ranked = rank_candidates(rows)
    out_rows = []
    for rank, r in enumerate(ranked, start=1):
        c, st = r.candidate, r.step_time
        times = {k: v for k, v in dataclasses.asdict(st).items() if k != "assumptions"}
        times["tokens_per_s_per_gpu"] = st.tokens_per_s_per_gpu
        times["dominant_comm"] = st.dominant_comm
        out_rows.append({
            "rank": rank, "label": c.label, "tp": c.tp, "pp": c.pp, "vpp": c.vpp, "cp": c.cp,
            "dp": c.dp, "sequence_parallel": c.sequence_parallel,
            "use_distributed_optimizer": c.use_distributed_optimizer, "recompute": c.recompute,
            "overrides": list(c.overrides), "peak_bytes": r.peak_bytes,
            "peak_gib": None if r.peak_bytes is None else r.peak_bytes / GIB,
            "fits": r.fits, "headroom_gib": headroom_gib(r, gpu), "step_time": times,
            "note": r.note,
        })
    assumptions = dict(ranked[0].step_time.assumptions) if ranked else {}
    return {"gpu": dataclasses.asdict(gpu), "assumptions": assumptions, "rows": out_rows}


__all__ = ["SweepRow", "format_sweep_table", "headroom_gib", "rank_candidates", "sweep_json"]
