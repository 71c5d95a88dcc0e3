"""Prompt sets for ``lumos_megatron.generate``: plain text (one prompt per line) or JSONL with
``prompt`` and optional ``image`` and ``seed`` (the format of the official evaluation prompt sets).

A line that cannot be used becomes a :class:`SkippedPrompt` (written to ``skipped.jsonl``) and the
others still run. ``write_seeded_prompt_set`` turns a prompt list into an evaluation set of
prompts × seeds (one JSONL line per sample, e.g. VBench's five seeds per prompt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple


@dataclass
class PromptRecord:
    """One sample to generate."""

    index: int
    """Position in the prompt set (names the outputs: ``sample_00003.*``)."""
    caption: str
    image: Optional[str] = None
    """I2V conditioning image (relative paths are relative to the prompt file)."""
    seed: Optional[int] = None
    """Seed of this sample's generator (default: the run's seed + index)."""

    @property
    def name(self) -> str:
        """Base name of the sample's output files."""
        return f"sample_{self.index:05d}"


@dataclass
class SkippedPrompt:
    """A prompt that was not generated, and why."""

    index: int
    line: str
    reason: str

    def record(self) -> dict:
        """The ``skipped.jsonl`` entry."""
        return {"index": self.index, "line": self.line, "reason": self.reason}


def _from_json(index: int, text: str, base: Path) -> PromptRecord:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg})") from None
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
        raise ValueError("expected an object with a non-empty string 'prompt'")
    image = item.get("image")
    if image is not None and not isinstance(image, str):
        raise ValueError("'image' must be a path string")
    seed = item.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("'seed' must be an integer")
    if image is not None and not Path(image).is_absolute():
        image = str(base / image)
    return PromptRecord(index, item["prompt"], image, seed)


def read_prompt_file(path: str | Path) -> Tuple[List[PromptRecord], List[SkippedPrompt]]:
    """Records and skipped lines of a prompt file (``.jsonl`` is JSON lines, anything else plain
    text; blank lines are ignored). Raises FileNotFoundError for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    jsonl = path.suffix.lower() == ".jsonl"
    records, skipped = [], []
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    for index, line in enumerate(line for line in lines if line):
        if not jsonl:
            records.append(PromptRecord(index, line))
            continue
        try:
            records.append(_from_json(index, line, path.parent))
        except ValueError as err:
            skipped.append(SkippedPrompt(index, line, str(err)))
    return records, skipped


def write_seeded_prompt_set(source: str | Path, seeds: List[int], destination: str | Path) -> int:
    """An evaluation set of ``source``'s prompts × ``seeds`` as JSONL (prompt-major: every seed of
    prompt 0, then prompt 1, ...): ``{"prompt", "image"?, "seed", "prompt_index"}`` per line, image
    paths absolute. Returns the number of lines. Raises ValueError when ``source`` has unusable
    lines (an evaluation set should not silently lose prompts) or ``seeds`` is empty."""
    if not seeds:
        raise ValueError("give at least one seed")
    records, skipped = read_prompt_file(source)
    if skipped:
        first = skipped[0]
        raise ValueError(f"{source}: {len(skipped)} unusable line(s), e.g. prompt {first.index}: {first.reason}")
    lines = []
    for record in records:
        for seed in seeds:
            item = {"prompt": record.caption, "seed": int(seed), "prompt_index": record.index}
            if record.image is not None:
                item["image"] = str(Path(record.image).resolve())
            lines.append(json.dumps(item))
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(destination)
    return len(lines)
