"""Official checkpoint files: lazy reading, and streaming writing of sharded safetensors.

Reading goes through ``safetensors.safe_open`` (memory-mapped; a tensor, or a block of its rows,
is materialised only when asked for). Writing does not use ``safetensors.torch.save_file``, which
needs every tensor of a shard in memory at once: the layout of every shard is known up front
(keys, dtypes, shapes), so each shard's header is written first and tensors, or row blocks of
them, are appended as they are produced. The bytes are the safetensors format (8-byte header
length, JSON header, row-major data), so any safetensors reader opens the result.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from lumos_megatron.conversion.errors import ConversionError

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPE_CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ConversionError(f"{path}: not valid JSON ({err})") from None


class OfficialCheckpoint:
    """An official (Hugging Face layout) checkpoint directory, read lazily.

    ``config`` is the parsed ``config.json``. Tensors come from ``model.safetensors`` or from the
    shards ``model.safetensors.index.json`` names. Missing files raise :class:`ConversionError`
    naming them.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConversionError(f"{self.directory}: no such checkpoint directory")
        config_path = self.directory / CONFIG_FILE
        if not config_path.is_file():
            raise ConversionError(f"{config_path}: missing (an official checkpoint has config.json)")
        self.config = _read_json(config_path)
        self._handles = ExitStack()
        self._open: Dict[str, object] = {}
        index = self.directory / INDEX_FILE
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{index}: has no 'weight_map'")
            self._file_of = {str(k): str(v) for k, v in weight_map.items()}
        elif (self.directory / SINGLE_FILE).is_file():
            self._file_of = dict.fromkeys(self._file(SINGLE_FILE).keys(), SINGLE_FILE)
        else:
            raise ConversionError(f"{self.directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
        for name in sorted(set(self._file_of.values())):
            if not (self.directory / name).is_file():
                raise ConversionError(f"{self.directory / name}: missing (named by {INDEX_FILE})")

    def _file(self, name: str):
        handle = self._open.get(name)
        if handle is None:
            from safetensors import safe_open

            path = self.directory / name
            try:
                handle = self._handles.enter_context(safe_open(str(path), framework="pt"))
            except Exception as err:  # SafetensorError: truncated or damaged file
                raise ConversionError(f"{path}: not a readable safetensors file ({err})") from None
            self._open[name] = handle
        return handle

    def keys(self) -> List[str]:
        """Every tensor key of the checkpoint, in file order."""
        return list(self._file_of)

    def _slice(self, key: str):
        if key not in self._file_of:
            raise ConversionError(f"{self.directory}: missing key {key}")
        name = self._file_of[key]
        try:
            return self._file(name).get_slice(key)
        except ConversionError:
            raise
        except Exception:
            raise ConversionError(f"{self.directory / name}: missing key {key} "
                                  f"(named by {INDEX_FILE})") from None

    def shape(self, key: str) -> Tuple[int, ...]:
        """Shape of ``key`` without reading it."""
        return tuple(self._slice(key).get_shape())

    def read(self, key: str) -> torch.Tensor:
        """The whole tensor ``key``."""
        return self._slice(key)[:]

    def read_rows(self, key: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of ``key`` (only those bytes are read)."""
        return self._slice(key)[start:stop]

    def close(self) -> None:
        """Release the memory maps (files are reopened on the next read). The pages a read touched
        stay resident while a file is mapped, so streaming callers close after each part."""
        self._handles.close()
        self._handles = ExitStack()
        self._open.clear()


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors dtype name of a torch dtype."""
    if dtype not in _DTYPE_CODES:
        raise ConversionError(f"dtype {dtype} cannot be written to safetensors")
    return _DTYPE_CODES[dtype]


class ShardedSafetensorsWriter:
    """Writes tensors, in a fixed order, into safetensors shards of at most ``max_shard_bytes``.

    ``entries`` lists ``(key, shape, dtype)`` in the order tensors will be appended; a tensor is
    never split across shards (one larger than the limit gets a shard of its own). One shard is
    named ``model.safetensors``; several are ``model-0000i-of-0000n.safetensors`` with an index.
    """

    def __init__(self, directory: str | Path, entries: Sequence[Tuple[str, Sequence[int], torch.dtype]],
                 max_shard_bytes: int):
        self.directory = Path(directory)
        self._entries = [(k, tuple(int(x) for x in shape), dtype) for k, shape, dtype in entries]
        self._nbytes = {k: _numel(shape) * torch.empty((), dtype=dtype).element_size()
                        for k, shape, dtype in self._entries}
        shards: List[List[int]] = [[]]
        size = 0
        for i, (key, _, _) in enumerate(self._entries):
            if shards[-1] and size + self._nbytes[key] > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(i)
            size += self._nbytes[key]
        n = len(shards)
        self._names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._shard_of = {self._entries[i][0]: s for s, members in enumerate(shards) for i in members}
        self._shards = shards
        self._next = 0  # index into entries of the tensor being written
        self._written = 0  # bytes of it written so far
        self._file = None
        self._current_shard = -1

    @property
    def file_names(self) -> List[str]:
        """The shard file names."""
        return list(self._names)

    def _open_shard(self, shard: int) -> None:
        header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for i in self._shards[shard]:
            key, shape, dtype = self._entries[i]
            header[key] = {"dtype": dtype_code(dtype), "shape": list(shape),
                           "data_offsets": [offset, offset + self._nbytes[key]]}
            offset += self._nbytes[key]
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        self._file = open(self.directory / self._names[shard], "wb")
        self._file.write(struct.pack("<Q", len(blob)))
        self._file.write(blob)
        self._current_shard = shard

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def append(self, key: str, part: torch.Tensor) -> None:
        """Append ``part``: the whole tensor ``key``, or its next block of rows."""
        if self._next >= len(self._entries) or self._entries[self._next][0] != key:
            expected = self._entries[self._next][0] if self._next < len(self._entries) else "nothing"
            raise RuntimeError(f"safetensors writer: got {key}, expected {expected}")
        _, shape, dtype = self._entries[self._next]
        if part.dtype != dtype or tuple(part.shape[1:]) != shape[1:]:
            raise RuntimeError(f"safetensors writer: {key} part {tuple(part.shape)} {part.dtype} does not "
                               f"match {shape} {dtype}")
        shard = self._shard_of[key]
        if shard != self._current_shard:
            self._close_shard()
            self._open_shard(shard)
        data = part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._written += data.nbytes
        if self._written > self._nbytes[key]:
            raise RuntimeError(f"safetensors writer: more bytes than the shape of {key} holds")
        if self._written == self._nbytes[key]:
            self._next += 1
            self._written = 0

    def close(self) -> None:
        """Finish the last shard and, for several shards, write the index."""
        self._close_shard()
        if self._next != len(self._entries):
            raise RuntimeError(f"safetensors writer: {self._entries[self._next][0]} was never written")
        if len(self._names) > 1:
            index = {"metadata": {"total_size": sum(self._nbytes.values())},
                     "weight_map": {key: self._names[s] for key, s in self._shard_of.items()}}
            with open(self.directory / INDEX_FILE, "w") as f:
                json.dump(index, f, indent=2)
                f.write("\n")

    def abort(self) -> None:
        """Close the open file without completing it (the caller removes the directory)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


def parse_size(text: str) -> int:
    """``'5GB'``, ``'500MB'``, ``'1.5GiB'`` or a plain byte count → bytes (decimal units as
    Hugging Face's ``max_shard_size``; ``KiB``/``MiB``/``GiB`` are binary)."""
    units = {"kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40,
             "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12, "b": 1}
    value = text.strip().lower()
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            number, scale = value[: -len(suffix)].strip(), units[suffix]
            break
    else:
        number, scale = value, 1
    try:
        size = int(float(number) * scale)
    except ValueError:
        raise ConversionError(f"--shard-size {text!r}: expected a size such as 5GB, 500MB or 2GiB") from None
    if size <= 0:
        raise ConversionError(f"--shard-size {text!r} must be positive")
    return size


def optional_template(path: Optional[Path]) -> Optional[dict]:
    """A JSON file's content, or None when ``path`` is None or absent."""
    if path is None or not Path(path).is_file():
        return None
    return _read_json(Path(path))
