"""What the tracker compares, computed on the model's device: each thing segment's mask on a small fixed
grid and its query's decoder embedding, and, for a batch, their overlaps and similarities with the tracks'.

A fixed grid makes masks of any frame size comparable and cheap: IoU on it is close enough to tell
which segment continues which, and the whole batch's matrices are one small copy to the host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..types import Segmentation

__all__ = ["GRID", "Features", "affinities", "feature_index", "thing_features"]

GRID = (72, 128)  # rows, columns of the grid masks are compared on


@dataclass(frozen=True)
class Features:
    """Rows of segments (or tracks): (N, rows * columns) float masks on the grid, (N, D) unit embeddings."""

    masks: torch.Tensor
    embeddings: torch.Tensor

    @staticmethod
    def empty(dim: int, device: torch.device) -> Features:
        return Features(torch.zeros((0, GRID[0] * GRID[1]), device=device), torch.zeros((0, dim), device=device))

    def __len__(self) -> int:
        return len(self.masks)

    def cat(self, other: Features) -> Features:
        return Features(torch.cat([self.masks, other.masks]), torch.cat([self.embeddings, other.embeddings]))

    def take(self, rows: torch.Tensor) -> Features:
        return Features(self.masks.index_select(0, rows), self.embeddings.index_select(0, rows))


@functools.lru_cache(maxsize=16)
def _grid_index(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.linspace(0, size[0] - 1, GRID[0], device=device).round().long()
    cols = torch.linspace(0, size[1] - 1, GRID[1], device=device).round().long()
    return rows, cols


def feature_index(seg: Segmentation, things: list[int]) -> torch.Tensor:
    """On the host, what :func:`thing_features` needs to pick ``things`` of ``seg``: their places, then their
    queries. Those of a batch go to the device together (``ops.upload_each``), so no frame waits for it."""
    return torch.tensor([*things, *(seg.queries[k] for k in things)], dtype=torch.int64)


def thing_features(seg: Segmentation, index: torch.Tensor, embeddings: torch.Tensor) -> Features:
    """The features of some segments of ``seg``, picked by ``index`` (:func:`feature_index`, on the device);
    ``embeddings`` is the frame's (Q, D) query embeddings."""
    things, queries = index.view(2, -1)
    rows, cols = _grid_index(tuple(seg.size), seg.device)
    if seg.segment_map is not None:  # sample the map, then one mask per thing: never a full-size mask
        small = seg.segment_map.index_select(0, rows).index_select(1, cols)
        masks = small[None] == (things + 1).to(torch.int32)[:, None, None]
    else:
        masks = seg.masks.index_select(0, things).view(torch.uint8).index_select(1, rows).index_select(2, cols)
    return Features(masks.to(embeddings.device, torch.float32).flatten(1),
                    F.normalize(embeddings.index_select(0, queries).float(), dim=-1))


def affinities(rows: Features, columns: Features) -> torch.Tensor:
    """(2, len(rows), len(columns)): the IoU of each pair's grid masks, and their embeddings' cosine."""
    inter = rows.masks @ columns.masks.T
    union = rows.masks.sum(1)[:, None] + columns.masks.sum(1)[None, :] - inter
    iou = inter / union.clamp(min=1.0)
    return torch.stack([iou, rows.embeddings @ columns.embeddings.T])
