"""Small tensor helpers shared by post-processing and drawing."""

from __future__ import annotations

import torch

__all__ = ["lookup"]


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a small table and a large index map, through ``index_select``: several times
    faster than advanced indexing on the CPU, and the same on a GPU."""
    return table.index_select(0, index.flatten().long()).view(*index.shape, *table.shape[1:])
