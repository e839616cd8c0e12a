"""Small tensor helpers shared by post-processing, drawing and the copies to and from the device."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import torch

__all__ = ["MOST_PIXELS", "batch_chunks", "download", "frames_at_once", "grouped", "lookup", "stacked", "upload_each"]


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a small table and a large index map, through ``index_select``: several times
    faster than advanced indexing on the CPU, and the same on a GPU."""
    flat = index.flatten()
    if flat.dtype not in (torch.int32, torch.int64):
        flat = flat.int()
    return table.index_select(0, flat).view(*index.shape, *table.shape[1:])


def upload_each(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Copy small 1-D host tensors of one dtype to ``device`` in one transfer that does not wait for the
    device (pinned memory, non-blocking): the per-frame tables of post-processing, once per batch."""
    if device.type == "cpu" or not tensors:
        return [t.to(device) for t in tensors]
    joined = torch.cat(tensors)
    if device.type == "cuda":
        joined = joined.pin_memory().to(device, non_blocking=True)
    else:
        joined = joined.to(device)
    return list(joined.split([len(t) for t in tensors]))


def download(t: torch.Tensor, *, wait: bool = True) -> torch.Tensor:
    """``t`` in host memory, with the same strides (a column-major map stays column-major).

    From a GPU with ``wait=False``, the copy goes into pinned memory, queued on the current stream
    without waiting: the device's DMA engine writes it, where a copy to ordinary memory goes through
    the driver's staging buffer and a CPU memcpy on the calling thread. Synchronize the stream before
    reading it.
    """
    if wait or t.device.type != "cuda":
        return t.cpu()
    host = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


# Pixels taken at once on a GPU, in all the frames of a chunk: eight 720p frames, four of 1080p, one of
# 4K. Drawing needs about 40 bytes of temporaries a pixel (some 330 MB), measuring maps 12.
MOST_PIXELS = 1 << 23


def frames_at_once(device: torch.device) -> bool:
    """Whether per-frame work done as tensor ops takes a batch's frames at once on ``device``: yes on a
    GPU, where each op is a launch whatever its size, so a batch costs the launches of one frame; no on
    the CPU, where a frame's temporaries stay in cache and a batch's are fresh pages (slower at once than
    frame by frame)."""
    return device.type != "cpu"


def batch_chunks(
    members: list[int], device: torch.device, costs: Sequence[int] | None = None, most: int | None = None,
) -> list[list[int]]:
    """How to split frames (of one size) for per-frame work: one by one, or, where
    :func:`frames_at_once`, all together; given each member's cost (pixels, masks) and the ``most`` a
    chunk may hold, in runs of members up to it (one over it alone), so that the memory a chunk's
    temporaries take stays bounded."""
    if not frames_at_once(device):
        return [[m] for m in members]
    if most is None or costs is None:
        return [list(members)]
    chunks: list[list[int]] = [[]]
    total = 0
    for member, cost in zip(members, costs):
        if chunks[-1] and total + cost > most:
            chunks.append([])
            total = 0
        chunks[-1].append(member)
        total += cost
    return chunks


def grouped(keys: Iterable[Hashable | None]) -> dict[Hashable, list[int]]:
    """The positions of equal keys, each key's in order, keys in order of first appearance; positions
    whose key is None are left out. How a batch's frames are told apart by size (or layout) so that
    each group's work runs once."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)``; for a single tensor, a view of it (no copy)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)
