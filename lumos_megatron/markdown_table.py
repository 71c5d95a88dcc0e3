"""Markdown tables: the format the reports, commands and benchmarks of this project print."""

from __future__ import annotations

from typing import Optional, Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], float_format: Optional[str] = None) -> str:
    """``header`` and ``rows`` as a markdown table (no trailing newline).

    Cells are printed with ``str``; with ``float_format`` (e.g. ``".3f"``), float cells use it.
    A row must have one cell per header column.
    """
    def cell(value: object) -> str:
        return format(value, float_format) if float_format and isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {row}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
