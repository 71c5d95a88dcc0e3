"""The table of training runs a scaling-law fit reads: one CSV row per run (or per evaluation).

Required columns: the parameter count (``params`` by default; ``--params-column`` names another,
e.g. ``non_embedding_params``), ``tokens`` and ``loss``. Optional columns, used when present:

* ``size_by``: which parameter count ``params`` holds (``non_embedding`` or ``total``; what
  ``collect.py`` writes from the ladder). Fitting ``params`` from rows of different measures is an
  error: the law would mix two definitions of N.
* ``flops``: the run's training compute; an empty cell is accepted (that row's compute then comes
  from the FLOPs-per-token model of the other rows, ``allocation.FlopsModel``).
* ``budget``: the label of the IsoFLOP budget the row belongs to (``C=1e+18`` from the ladder);
  rows of tokens-per-parameter budgets (``tpp=...``) and empty labels belong to none.
* ``loss_source``: ``validation`` or ``train``; one fit mixing both is an error unless allowed.
* ``run``: the run a row comes from; rows of one run (``collect.py --per-eval``) are resampled
  together by the bootstrap. Without it every row is its own run.

Other columns are ignored. Every used number must be finite and positive; anything else raises
``RunsInputError`` with a one-line message.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

#: Fewest runs an Approach 3 fit accepts: more runs than its five parameters.
MIN_POINTS = 6

#: Parameter columns whose measure is known from the name.
MEASURE_OF_COLUMN = {"non_embedding_params": "non_embedding", "total_params": "total"}


class RunsInputError(ValueError):
    """The runs table is missing, malformed, or has too few usable runs."""


@dataclass
class ScalingRuns:
    """Rows as arrays; ``line`` is each row's line number in the CSV (header is line 1)."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    line: np.ndarray
    flops: Optional[np.ndarray] = None
    """Training compute per row; NaN where the cell was empty. None without the column."""
    budget: Optional[np.ndarray] = None
    """Budget label per row ('' for none). None without the column."""
    run: Optional[np.ndarray] = None
    """Integer id of the run each row comes from (rows of one run share it)."""
    params_column: str = "params"
    measure: str = "params"
    """What N is: ``non_embedding``, ``total`` or (unknown) the column's name."""
    loss_sources: Tuple[str, ...] = ()
    excluded: List[Dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.loss.size)

    @property
    def groups(self) -> np.ndarray:
        """Run id of every row (each row its own run when the table has no ``run`` column)."""
        return np.arange(len(self)) if self.run is None else self.run

    def subset(self, keep: np.ndarray) -> "ScalingRuns":
        """The rows selected by the boolean or index array ``keep``."""
        pick = lambda arr: None if arr is None else arr[keep]  # noqa: E731
        return replace(self, params=self.params[keep], tokens=self.tokens[keep], loss=self.loss[keep],
                       line=self.line[keep], flops=pick(self.flops), budget=pick(self.budget),
                       run=pick(self.run), excluded=list(self.excluded))


def _number(text: str, column: str, line: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RunsInputError(f"line {line}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise RunsInputError(f"line {line}: column {column!r} must be a finite positive number, got {text!r}")
    return value


def _lines_of(values: List[str], lines: List[int], wanted: str) -> str:
    found = [str(n) for v, n in zip(values, lines) if v == wanted]
    return ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")


def _one_value(column: str, values: List[str], lines: List[int], hint: str) -> Optional[str]:
    """The single non-empty value of ``column``; RunsInputError naming lines of two when mixed."""
    distinct = list(dict.fromkeys(v for v in values if v))
    if len(distinct) > 1:
        a, b = distinct[:2]
        raise RunsInputError(f"column {column!r} mixes {a!r} (lines {_lines_of(values, lines, a)}) and {b!r} "
                             f"(lines {_lines_of(values, lines, b)}); {hint}")
    return distinct[0] if distinct else None


def read_runs_csv(path: str | Path, params_column: str = "params",
                  allow_mixed_loss: bool = False) -> ScalingRuns:
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
    values: Dict[str, List[float]] = {name: [] for name in required}
    flops: List[float] = []
    text: Dict[str, List[str]] = {name: [] for name in ("budget", "size_by", "loss_source", "run")}
    lines: List[int] = []
    for index, row in enumerate(rows):
        row = {(k or "").strip(): (v.strip() if isinstance(v, str) else "") for k, v in row.items()}
        line = index + 2
        if all(v == "" for v in row.values()):
            continue  # blank line
        for name in required:
            values[name].append(_number(row.get(name, ""), name, line))
        cell = row.get("flops", "")
        flops.append(math.nan if cell == "" else _number(cell, "flops", line))
        for name in ("budget", "size_by", "loss_source", "run"):
            text[name].append(row.get(name, ""))
        lines.append(line)
    if not lines:
        raise RunsInputError(f"{path}: no runs")
    measure = MEASURE_OF_COLUMN.get(params_column, params_column)
    if params_column == "params" and "size_by" in header:
        measure = _one_value("size_by", text["size_by"], lines,
                             "fit one measure of N (collect the runs separately, or pick a column with "
                             "--params-column non_embedding_params | total_params)") or "params"
    sources = ()
    if "loss_source" in header:
        distinct = tuple(dict.fromkeys(v for v in text["loss_source"] if v))
        if len(distinct) > 1 and not allow_mixed_loss:
            _one_value("loss_source", text["loss_source"], lines,
                       "validation and training losses are not comparable; pass --allow-mixed-loss to fit them anyway")
        sources = distinct
    run = None
    if "run" in header:
        ids = {name: i for i, name in enumerate(dict.fromkeys(text["run"]))}
        run = np.array([ids[name] if name else len(ids) + k for k, name in enumerate(text["run"])])
    return ScalingRuns(np.array(values[params_column]), np.array(values["tokens"]), np.array(values["loss"]),
                       np.array(lines),
                       flops=np.array(flops) if "flops" in header else None,
                       budget=np.array(text["budget"], dtype=object) if "budget" in header else None,
                       run=run, params_column=params_column, measure=measure, loss_sources=sources)


def exclude_top_loss(runs: ScalingRuns, count: int) -> Tuple[ScalingRuns, List[Dict[str, float]]]:
    """Leave out the ``count`` rows with the highest loss (ties: the later CSV line goes first).

    Returns the remaining rows (their ``excluded`` lists the left-out rows) and that list."""
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
    """Raise ``RunsInputError`` when fewer than ``minimum`` rows remain."""
    if len(runs) < minimum:
        left_out = f" after leaving out {len(runs.excluded)}" if runs.excluded else ""
        raise RunsInputError(f"too few runs: {len(runs)}{left_out}; the fit needs at least {minimum}")
