"""Small tensor helpers shared by post-processing and drawing."""

from __future__ import annotations

import torch

__all__ = ["lookup", "upload_each"]


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a small table and a large index map, through ``index_select``: several times
    faster than advanced indexing on the CPU, and the same on a GPU."""
    flat = index.flatten()
    if flat.dtype not in (torch.int32, torch.int64):
        flat = flat.long()
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
