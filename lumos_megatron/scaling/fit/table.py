"""The table of training runs a scaling-law fit reads: one CSV row per run.

Required columns: the parameter count (``params`` by default, e.g. ``non_embedding_params`` instead),
``tokens`` and ``loss``. Optional: ``flops`` (training compute of the run) and ``budget`` (a label of
the IsoFLOP group the run belongs to). Other columns are ignored. Every used value must be a finite
positive number; anything else raises ``RunsInputError`` with a one-line message.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

#: Fewest runs an Approach 3 fit accepts: more runs than its five parameters.
MIN_POINTS = 6


class RunsInputError(ValueError):
    """The runs table is missing, malformed, or has too few usable runs."""


@dataclass
class ScalingRuns:
    """Runs as arrays; ``line`` is each run's line number in the CSV (header is line 1)."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    line: np.ndarray
    flops: Optional[np.ndarray] = None
    budget: Optional[np.ndarray] = None
    params_column: str = "params"
    excluded: List[Dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.loss.size)

    def subset(self, keep: np.ndarray) -> "ScalingRuns":
        """The runs selected by the boolean or index array ``keep``."""
        pick = lambda arr: None if arr is None else arr[keep]  # noqa: E731
        return ScalingRuns(self.params[keep], self.tokens[keep], self.loss[keep], self.line[keep],
                           pick(self.flops), pick(self.budget), self.params_column, list(self.excluded))

    def compute(self, flops_per_param_token: float = 6.0) -> np.ndarray:
        """Training compute per run: the ``flops`` column, else ``flops_per_param_token * N * D``."""
        if self.flops is not None:
            return self.flops
        return flops_per_param_token * self.params * self.tokens


def _number(text: str, column: str, line: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RunsInputError(f"line {line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise RunsInputError(f"line {line}: column {column!r} must be a finite positive number, got {text!r}")
    return value


def read_runs_csv(path: str | Path, params_column: str = "params") -> ScalingRuns:
    """Read and validate the runs table at ``path`` (see the module doc for its columns)."""
    path = Path(path)
    if not path.is_file():
        raise RunsInputError(f"runs file not found: {path}")
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunsInputError(f"cannot read runs file {path}: {err}") from None
    required = [params_column, "tokens", "loss"]
    missing = [name for name in required if name not in header]
    if missing:
        raise RunsInputError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(header) or 'none'})")
    numeric = required + (["flops"] if "flops" in header else [])
    values: Dict[str, List[float]] = {name: [] for name in numeric}
    budgets: List[str] = []
    lines: List[int] = []
    for index, row in enumerate(rows):
        row = {(k or "").strip(): v for k, v in row.items()}
        line = index + 2
        if all((v or "").strip() == "" for v in row.values() if isinstance(v, str)):
            continue  # blank line
        for name in numeric:
            values[name].append(_number((row.get(name) or "").strip(), name, line))
        if "budget" in header:
            budgets.append((row.get("budget") or "").strip())
        lines.append(line)
    if not lines:
        raise RunsInputError(f"{path}: no runs")
    arrays = {name: np.array(vals, dtype=float) for name, vals in values.items()}
    return ScalingRuns(arrays[params_column], arrays["tokens"], arrays["loss"], np.array(lines),
                       flops=arrays.get("flops"),
                       budget=np.array(budgets, dtype=object) if "budget" in header else None,
                       params_column=params_column)


def exclude_top_loss(runs: ScalingRuns, count: int) -> Tuple[ScalingRuns, List[Dict[str, float]]]:
    """Leave out the ``count`` runs with the highest loss (ties: the later CSV line goes first).

    Returns the remaining runs (their ``excluded`` lists the left-out runs) and that list."""
    if count < 0:
        raise RunsInputError(f"--exclude-top-loss must be >= 0, got {count}")
    order = np.lexsort((-runs.line, -runs.loss))  # highest loss first
    dropped = np.sort(order[:count])
    keep = np.ones(len(runs), bool)
    keep[dropped] = False
    excluded = [{"line": int(runs.line[i]), "params": float(runs.params[i]),
                 "tokens": float(runs.tokens[i]), "loss": float(runs.loss[i])} for i in dropped]
    kept = runs.subset(keep)
    kept.excluded = excluded
    return kept, excluded


def require_points(runs: ScalingRuns, minimum: int = MIN_POINTS) -> None:
    """Raise ``RunsInputError`` when fewer than ``minimum`` runs remain."""
    if len(runs) < minimum:
        left_out = f" after leaving out {len(runs.excluded)}" if runs.excluded else ""
        raise RunsInputError(f"too few runs: {len(runs)}{left_out}; the fit needs at least {minimum}")
