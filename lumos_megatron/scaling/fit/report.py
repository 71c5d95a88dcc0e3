"""``report.md``: a readable summary of a scaling-law fit that embeds its plots.

It is rendered from the ``fit.json`` content (``pipeline.run_scaling_fit``), so the report and
the JSON never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

PARAM_ORDER = ("E", "A", "B", "alpha", "beta")


def _optimum_provenance(diagnostics: Dict) -> str:
    """Where the optimum came from: how many grid starts ended there, and whether the tight scipy
    L-BFGS-B refinement of the best end points went lower than every batched end point."""
    count = diagnostics["starts_at_optimum"]
    if diagnostics.get("polish_improved"):
        return (f", found by the tight scipy L-BFGS-B refinement of the best end points ({count} grid "
                "starts had ended within 1e-6 relative of it)")
    return f", reached by {count} grid starts (within 1e-6 relative)"


def _g(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _fit_table(result: Dict) -> List[str]:
    level = result["ci_level"]
    lines = [f"| parameter | fit | {level:.0%} interval | bootstrap std |", "|---|---|---|---|"]
    for name in PARAM_ORDER:
        low, high = result["ci"][name]
        lines.append(f"| {name} | {_g(result[name], 5)} | [{_g(low)}, {_g(high)}] | "
                     f"{_g(result['bootstrap']['std'][name], 3)} |")
    return lines


def _flops_model_line(model: Dict) -> str:
    if "sizes" not in model:
        return f"Training FLOPs per token M(N) = {model['flops_per_param_token']:.4g} N, {model['source']}."
    low, high = model["flops_per_param_token_range"]
    return (f"Training FLOPs per token M(N), {model['source']}: M/N from {low:.4g} to {high:.4g} over the "
            f"{len(model['sizes'])} sampled sizes (interpolated in log-log).")


def _allocation_lines(allocation: Dict) -> List[str]:
    if allocation.get("skipped"):
        return [allocation["skipped"] + "."]
    eff = allocation.get("effective_exponents") or {}
    lines = [_flops_model_line(allocation["flops_model"]) + " N* minimises L(N, C / M(N)).", ""]
    if eff:
        lines += [f"- effective exponents over the budgets below: N* ~ C^{eff['params']:.4f}, "
                  f"D* ~ C^{eff['tokens']:.4f}"]
    lines += [(f"- with M = k N (closed form): N* ~ C^{allocation['params_exponent']:.4f}, "
               f"D* ~ C^{allocation['tokens_exponent']:.4f}, G = {allocation['G']:.4g}"),
              "",
              "| C (FLOPs) | N* | D* | D*/N* | predicted loss |", "|---|---|---|---|---|"]
    for row in allocation["budgets"]:
        lines.append(f"| {row['flops']:.3g} | {row['params']:.3g} | {row['tokens']:.3g} | "
                     f"{row['tokens_per_param']:.3g} | {row['loss']:.4f} |")
    return lines


def _approach2_lines(approach2: Dict) -> List[str]:
    lines = [(f"{approach2['num_budgets']} budgets ({approach2['budget_source']}), "
              f"{approach2['num_used']} with a usable IsoFLOP profile.")]
    if approach2.get("skipped"):
        return lines + ["", f"Skipped: {approach2['note']}."]
    p, t = approach2["params_opt"], approach2["tokens_opt"]

    def interval(law: Dict) -> str:
        if "ci" not in law:
            return ""
        return (f", interval [{law['ci'][0]:.4f}, {law['ci'][1]:.4f}] ({law['bootstrap_valid']} of "
                f"{law['bootstrap_resamples']} resamples usable)")

    lines += ["", f"- N*(C) = {p['coefficient']:.4g} C^{p['exponent']:.4f}{interval(p)}",
              f"- D*(C) = {t['coefficient']:.4g} C^{t['exponent']:.4f}{interval(t)}"]
    if approach2.get("note"):
        lines += ["", approach2["note"] + "."]
    lines += ["", "| C (FLOPs) | runs | N* | D* |", "|---|---|---|---|"]
    for b in approach2["budgets"]:
        if b["used"]:
            lines.append(f"| {b['flops']:.3g} | {b['num_points']} | {b['params_opt']:.3g} | {b['tokens_opt']:.3g} |")
    return lines


def write_report(path: Path, result: Dict, options: Dict) -> Path:
    """Write ``report.md`` for the fit ``result`` (``fit.json`` content) next to its plots."""
    s = result["settings"]
    plots = result["plots"]
    excluded = ", ".join(f"line {e['line']} (loss {e['loss']:.4g})" for e in s["excluded"]) or "none"
    lines = [
        "# Scaling-law fit",
        "",
        (f"Runs: `{s['runs_csv']}`, {s['num_points']} of {s['num_points_total']} rows used "
         f"({s['num_runs']} runs), N = `{s['params_column']}` ({s['size_by']}), loss from "
         f"{' and '.join(s['loss_source']) or 'unstated'}. Left out (highest loss): {excluded}."),
        "",
        "## Approach 3: L(N, D) = E + A / N^alpha + B / D^beta",
        "",
        (f"Huber objective (delta = {s['huber_delta']:g}) of log residuals, L-BFGS from "
         f"{s['num_starts']} grid starts (stopping relative to the objective), best end points refined "
         f"at relative ftol {s['optimizer']['refine']['ftol_relative']:g}: objective "
         f"{result['diagnostics']['objective_batched']:.8g} batched, {result['objective']:.8g} refined"
         f"{_optimum_provenance(result['diagnostics'])}. Intervals: "
         f"{result['ci_method']}, seed {s['seed']}; refits start from {s['bootstrap_starts']}."),
        "",
        *_fit_table(result),
        "",
        f"![loss vs parameters]({plots['loss_vs_params']})",
        "",
        f"![observed vs fitted]({plots['observed_vs_fitted']})",
        "",
        f"![residuals]({plots['residuals']})",
        "",
        f"![bootstrap distributions]({plots['bootstrap']})",
        "",
        "## Compute-optimal allocation (from Approach 3)",
        "",
        *_allocation_lines(result["allocation"]),
        "",
        "## Approach 2: IsoFLOP profiles",
        "",
        *_approach2_lines(result["approach2"]),
        "",
        f"![IsoFLOP profiles]({plots['isoflop']})",
        "",
        "## Settings",
        "",
        *(f"- `{k}`: {v}" for k, v in options.items()),
        f"- grid of starts: {s['grid']}",
        (f"- time: grid fit {result['timing_s']['grid_fit']:.2f} s, bootstrap "
         f"{result['timing_s']['bootstrap']:.2f} s"),
        "",
    ]
    path.write_text("\n".join(lines))
    return path
