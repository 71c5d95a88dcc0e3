"""The tokenizers a run's data was made with, as its checkpoints record them.

Training writes ``data.video_tokenizer`` and ``data.text_tokenizer`` into every checkpoint's
``run_config.yaml`` so that ``lumos_megatron.generate --load C`` finds them without flags. The
recipe's values win; otherwise they come from the ``dataset.json`` of the run's pre-tokenized
datasets (``tools/pretokenize.py`` stores the specs it was given under ``settings``), provided
every dataset of the run names the same spec. Mock data records nothing.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

from lumos_megatron.config.schema import LumosConfig

TOKENIZER_FIELDS = ("video_tokenizer", "text_tokenizer")
_SPEC_KINDS = ("cosmos", "fsq", "hf", "sp")


def absolute_spec(spec: str) -> str:
    """``spec`` (``kind:PATH`` or a bare path) with a relative path made absolute against the
    working directory when it exists there; anything else unchanged.

    Specs are written relative to the directory a command ran in; the checkpoint is read later
    from anywhere, so an absolute path is what keeps it usable.
    """
    kind, sep, rest = spec.partition(":")
    prefix, path = (kind + sep, rest) if sep and kind in _SPEC_KINDS else ("", spec)
    local = Path(path).expanduser()
    if local.is_absolute() or not local.exists():
        return spec
    return prefix + str(local.resolve())


def _dataset_dir(path: str) -> str:
    # data_path names a dataset directory or one shard prefix inside it.
    return path if os.path.isdir(path) else os.path.dirname(path) or "."


def dataset_tokenizers(*data_paths: Sequence[str]) -> Dict[str, Optional[str]]:
    """``{field: spec}`` for ``TOKENIZER_FIELDS``, from the ``dataset.json`` of every dataset in
    ``data_paths`` (each in Megatron data-path syntax: ``[p]`` or ``[w1, p1, ...]``). A field is
    None when a dataset does not name it; datasets that name different specs also give None, with
    a warning (a blend of datasets from different tokenizers has no single tokenizer to record)."""
    from lumos_megatron.data.blend import parse_data_path
    from lumos_megatron.data.indexed import read_dataset_info

    found: Dict[str, set] = {name: set() for name in TOKENIZER_FIELDS}
    datasets = [p for paths in data_paths if paths for _, p in parse_data_path(paths)]
    for path in datasets:
        settings = read_dataset_info(_dataset_dir(path)).get("settings", {})
        for name in TOKENIZER_FIELDS:
            found[name].add(settings.get(name) or None)
    result: Dict[str, Optional[str]] = {}
    for name, specs in found.items():
        named = sorted(specs - {None})
        if len(named) > 1:
            warnings.warn(f"the training datasets name different {name.replace('_', ' ')}s "
                          f"({', '.join(named)}); none is recorded in the checkpoints")
        result[name] = next(iter(specs)) if len(specs) == 1 else None
    return result


def with_recorded_tokenizers(cfg: LumosConfig) -> LumosConfig:
    """A copy of ``cfg`` whose ``data.video_tokenizer`` / ``data.text_tokenizer`` name the run's
    tokenizers (the recipe's, else the datasets'), with paths made absolute where they resolve:
    what ``run_config.yaml`` stores."""
    out = copy.deepcopy(cfg)
    d = out.data
    missing = [name for name in TOKENIZER_FIELDS if not getattr(d, name)]
    if missing and not d.mock and not d.streaming_manifest:
        from_data = dataset_tokenizers(d.data_path, d.image_data_path)
        for name in missing:
            setattr(d, name, from_data[name])
    for name in TOKENIZER_FIELDS:
        if getattr(d, name):
            setattr(d, name, absolute_spec(getattr(d, name)))
    return out
