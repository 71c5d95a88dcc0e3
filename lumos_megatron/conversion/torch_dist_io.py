"""Streaming writes and sliced reads of megatron-core ``torch_dist`` checkpoints, one process.

A torch_dist checkpoint is a torch.distributed.checkpoint (DCP) directory whose keys are
megatron's ShardedTensor keys (global, layout-independent tensors, e.g. all layers of a kind
stacked along one axis), plus megatron's ``common.pt`` (non-tensor state) and ``metadata.json``
(the backend names). megatron's own save needs every tensor of the state dict in memory. Here a
custom DCP planner declares the chunks up front (offsets and sizes in the global tensors) and
materialises each one only when the writer asks for it, one file per chunk, so peak memory is one
chunk plus what the producer caches (one layer). Loading reshards DCP chunks to whatever TP/PP
layout asks for them, so a checkpoint written as whole-layer chunks loads anywhere.

Reading is the converse: a planner that asks DCP for one box of one global tensor.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from lumos_megatron.conversion.errors import ConversionError


@contextmanager
def _single_process_dcp():
    # DCP warns that it assumes a single process when no process group exists: that is the intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process.*")
        yield


@dataclass
class Chunk:
    """One box of a global tensor and how to produce it."""

    key: str
    offsets: Tuple[int, ...]
    sizes: Tuple[int, ...]
    produce: Callable[[], torch.Tensor]
    """Returns the box's data (shape ``sizes``, the tensor's dtype), called once, when written."""
    label: str
    """Progress group (e.g. ``layer 3``): the progress callback fires when it changes."""


def sharded_object_key(key: str, index: int, count: int) -> str:
    """megatron's storage key of shard ``index`` of a 1-D ShardedObject of ``count`` shards
    (``ShardedObject.unique_key`` of a per-layer ``_extra_state``)."""
    return f"{key}/shard_{index}_{count}"


class _LazySavePlanner(DefaultSavePlanner):
    """Save plan from declared chunks; data produced on demand in ``resolve_data``."""

    def __init__(self, shapes: Dict[str, Tuple[Tuple[int, ...], torch.dtype]], chunks: List[Chunk],
                 objects: Dict[str, bytes], on_chunk: Optional[Callable[[Chunk], None]]):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._shapes, self._objects, self._on_chunk = shapes, objects, on_chunk
        self._chunks = {(c.key, tuple(c.offsets)): c for c in chunks}
        self._order = chunks

    def set_up_planner(self, state_dict, storage_meta=None, is_coordinator: bool = False) -> None:
        self.state_dict = state_dict
        self.is_coordinator = is_coordinator

    def create_local_plan(self) -> SavePlan:
        items = []
        for c in self._order:
            shape, dtype = self._shapes[c.key]
            offsets = torch.Size(c.offsets)
            items.append(WriteItem(
                index=MetadataIndex(c.key, offsets), type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(chunk=ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(c.sizes)),
                                            properties=TensorProperties(dtype=dtype), size=torch.Size(shape))))
        items += [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO) for key in self._objects]
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(self._objects[write_item.index.fqn])
        chunk = self._chunks[(write_item.index.fqn, tuple(write_item.index.offset))]
        data = chunk.produce()
        _, dtype = self._shapes[chunk.key]
        if tuple(data.shape) != tuple(chunk.sizes) or data.dtype != dtype:
            raise RuntimeError(f"{chunk.key} at {chunk.offsets}: produced {tuple(data.shape)} {data.dtype}, "
                               f"declared {tuple(chunk.sizes)} {dtype}")
        if self._on_chunk is not None:
            self._on_chunk(chunk)
        return data.contiguous()


class TorchDistWriter:
    """Collects the layout of a torch_dist checkpoint, then writes it chunk by chunk."""

    def __init__(self) -> None:
        self._shapes: Dict[str, Tuple[Tuple[int, ...], torch.dtype]] = {}
        self._chunks: List[Chunk] = []
        self._objects: Dict[str, bytes] = {}

    def add_tensor(self, key: str, shape: Sequence[int], dtype: torch.dtype) -> None:
        """Declare global tensor ``key``; its chunks must tile it exactly."""
        self._shapes[key] = (tuple(int(x) for x in shape), dtype)

    def add_chunk(self, chunk: Chunk) -> None:
        """Declare one box of a declared tensor."""
        if chunk.key not in self._shapes:
            raise KeyError(chunk.key)
        self._chunks.append(chunk)

    def add_object(self, storage_key: str, value) -> None:
        """A megatron ShardedObject shard (serialised the way megatron's torch_dist strategy does:
        ``torch.save`` of a one-element list)."""
        buffer = io.BytesIO()
        torch.save([value], buffer)
        self._objects[storage_key] = buffer.getvalue()

    @property
    def chunks(self) -> List[Chunk]:
        """Declared chunks, in write order."""
        return list(self._chunks)

    def write(self, directory: str | Path, common: dict,
              on_chunk: Optional[Callable[[Chunk], None]] = None) -> None:
        """Write the checkpoint into the existing, empty ``directory``."""
        from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
        from megatron.core.dist_checkpointing.strategies.common import COMMON_STATE_FNAME

        directory = Path(directory)
        planner = _LazySavePlanner(self._shapes, self._chunks, self._objects, on_chunk)
        # One file per chunk: DCP keeps every tensor of a file alive until the file is closed.
        writer = FileSystemWriter(str(directory), single_file_per_rank=False, thread_count=1, sync_files=True)
        try:
            with _single_process_dcp():
                dcp.save({}, storage_writer=writer, planner=planner, no_dist=True)
        except CheckpointException as err:  # DCP wraps what the producers raised
            cause = _first_failure(err)
            if isinstance(cause, ConversionError):
                raise cause from None
            raise ConversionError(f"cannot write {directory}: {type(cause).__name__}: {cause}") from None
        # What megatron's torch common strategy writes (its save_common needs a process group).
        torch.save(common, directory / COMMON_STATE_FNAME)
        save_config(CheckpointingConfig("torch_dist"), str(directory))


def _first_failure(err: CheckpointException) -> BaseException:
    for failure in err.failures.values():
        return failure[0] if isinstance(failure, tuple) else failure
    return err


class _BoxLoadPlanner(LoadPlanner):
    """Loads boxes of global tensors into caller-provided destination tensors."""

    def __init__(self, boxes: Dict[str, Tuple[Sequence[int], torch.Tensor]]):
        self._boxes = boxes

    def set_up_planner(self, state_dict, metadata=None, is_coordinator: bool = False) -> None:
        self._metadata = metadata

    def create_local_plan(self) -> LoadPlan:
        items = []
        for key, (offsets, dest) in self._boxes.items():
            md = self._metadata.state_dict_metadata[key]
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=dest.shape)
            items += create_read_items_for_chunk_list(key, md, [chunk])
        return LoadPlan(items)

    def create_global_plan(self, global_plan):
        return global_plan

    def finish_plan(self, central_plan):
        return central_plan

    def load_bytes(self, read_item, value) -> None:
        raise RuntimeError("only tensor boxes are read")

    def resolve_tensor(self, read_item):
        dest = self._boxes[read_item.dest_index.fqn][1]
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            dest = dest.narrow(dim, start, length)
        return dest

    def commit_tensor(self, read_item, tensor) -> None:
        pass


class TorchDistReader:
    """Global tensors of a torch_dist checkpoint, read box by box (any saved TP/PP layout)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / ".metadata").is_file():
            raise ConversionError(f"{self.directory} is not a complete torch_dist checkpoint "
                                  f"({self.directory / '.metadata'} is missing)")
        self.metadata = FileSystemReader(str(self.directory)).read_metadata()

    def tensors(self) -> Dict[str, TensorStorageMetadata]:
        """Every global tensor (model and optimizer state) and its storage metadata."""
        return {k: v for k, v in self.metadata.state_dict_metadata.items()
                if isinstance(v, TensorStorageMetadata)}

    def shape(self, key: str) -> Tuple[int, ...]:
        """Global shape of tensor ``key``."""
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise ConversionError(f"{self.directory}: missing key {key}")
        return tuple(md.size)

    def dtype(self, key: str) -> torch.dtype:
        """Stored dtype of tensor ``key``."""
        self.shape(key)
        return self.metadata.state_dict_metadata[key].properties.dtype

    def read(self, key: str, offsets: Optional[Sequence[int]] = None, sizes: Optional[Sequence[int]] = None,
             dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The box ``[offsets, offsets + sizes)`` of ``key`` (the whole tensor by default)."""
        shape = self.shape(key)
        offsets = tuple(offsets) if offsets is not None else (0,) * len(shape)
        sizes = tuple(sizes) if sizes is not None else shape
        return self.read_many({key: (offsets, sizes)}, dtype)[key]

    def read_many(self, boxes: Dict[str, Tuple[Sequence[int], Sequence[int]]],
                  dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
        """``{key: (offsets, sizes)}`` → ``{key: box}``, in one pass over the files."""
        dests = {key: (tuple(offsets), torch.empty(tuple(sizes), dtype=dtype or self.dtype(key)))
                 for key, (offsets, sizes) in boxes.items()}
        with _single_process_dcp():
            dcp.load({}, storage_reader=FileSystemReader(str(self.directory)),
                     planner=_BoxLoadPlanner(dests), no_dist=True)
        return {key: dest for key, (_, dest) in dests.items()}
