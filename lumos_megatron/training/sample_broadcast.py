"""Read a micro-batch's samples on one rank of a group and share them with the others.

Every rank of a tensor(+context)-parallel group trains on the same samples. For sources whose
reads are expensive (streaming decodes and tokenizes a video per read) one rank reads and
broadcasts, as Megatron's ``get_batch_on_this_tp_rank`` does, instead of every rank decoding the
same videos. The ranks of a group run the same schedule, so their calls pair up in order.
A read that fails on the source rank fails on every rank of the group with the same error,
instead of leaving the others waiting in the broadcast.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.distributed as dist

Sample = Tuple[torch.Tensor, torch.Tensor]


class SampleReadError(RuntimeError):
    """The source rank of the group could not read a sample; the message is its error."""


def read_samples(source, indices: Sequence[int], group, src: int) -> List[Sample]:
    """``[source[i] for i in indices]``, read on global rank ``src`` and broadcast over ``group``."""
    payload: list = [None]
    if dist.get_rank() == src:
        try:
            payload[0] = [source[i] for i in indices]
        except Exception as err:  # shared, so that no rank of the group hangs
            payload[0] = SampleReadError(f"{type(err).__name__}: {err}")
    dist.broadcast_object_list(payload, src=src, group=group)
    if isinstance(payload[0], SampleReadError):
        raise payload[0]
    return payload[0]
