"""The data that crosses stage boundaries: decoded frames and per-frame results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch

from .ops import lookup

__all__ = ["TASKS", "Frame", "Segmentation", "FrameResult"]

TASKS = ("semantic", "instance", "panoptic")


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        index: position in its source, from 0.
        pts: presentation timestamp in ``time_base`` units, as the source gave it (None if it gave none).
        time_base: unit of ``pts`` in seconds.
        time: seconds since the start of the source (or wall-clock seconds for a live source).
        source: name of the source that produced it.
        captured: ``time.monotonic()`` when the frame was decoded, for latency figures.
        decode_s: seconds spent decoding and converting this frame.
        dropped: frames of a live source discarded, unprocessed, since the previous delivered one.
    """

    image: np.ndarray
    index: int
    pts: int | None
    time_base: Fraction
    time: float
    source: str = "0"
    captured: float = 0.0
    decode_s: float = 0.0
    dropped: int = 0

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"frame image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Segmentation:
    """The segments found in one frame, as transformers' post-processing defines them.

    Attributes:
        task: "semantic", "instance" or "panoptic".
        masks: (N, H, W) bool, one mask per segment; instance masks may overlap, the others do not.
        ids: segment ids (panoptic: from 1, fused segments share one; instance: from 0; semantic: the label id).
        label_ids: class of each segment.
        scores: confidence of each segment (None for semantic segments).
        areas: pixel count of each mask.
        boxes: (x, y, w, h) bounding box of each mask.
        id2label: class names by label id.
        segment_map: (H, W) int32, k + 1 where segment k is and 0 elsewhere; set for semantic and
            panoptic segmentations (whose masks never overlap), so drawing needs one map, not N masks.
    """

    task: str
    masks: torch.Tensor
    ids: list[int]
    label_ids: list[int]
    scores: list[float | None]
    areas: list[int]
    boxes: list[tuple[int, int, int, int]]
    id2label: dict[int, str] = field(default_factory=dict, repr=False)
    segment_map: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.masks.ndim != 3 or self.masks.dtype != torch.bool:
            raise ValueError(f"masks must be (N, H, W) bool, got {tuple(self.masks.shape)} {self.masks.dtype}")
        n = self.masks.shape[0]
        counts = [len(self.ids), len(self.label_ids), len(self.scores), len(self.areas), len(self.boxes)]
        if any(c != n for c in counts):
            raise ValueError(f"{n} masks but ids, labels, scores, areas, boxes number {counts}")
        if self.segment_map is not None and self.segment_map.shape != self.masks.shape[1:]:
            raise ValueError(f"segment_map is {tuple(self.segment_map.shape)}, masks {tuple(self.masks.shape[1:])}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> list[str]:
        """Class names of the segments."""
        return [self.id2label.get(i, str(i)) for i in self.label_ids]

    def index_map(self) -> torch.Tensor:
        """(H, W) int32: k + 1 where segment k is, 0 where none is; later segments win where they overlap."""
        if self.segment_map is not None:
            return self.segment_map
        out = torch.zeros(self.masks.shape[1:], dtype=torch.int32, device=self.masks.device)
        for k, mask in enumerate(self.masks):
            out.masked_fill_(mask, k + 1)
        return out

    def label_map(self) -> torch.Tensor:
        """(H, W) int64 map of label ids, -1 where no segment is; later segments win where they overlap."""
        index = self.index_map()
        table = torch.tensor([-1, *self.label_ids], dtype=torch.int64, device=index.device)
        return lookup(table, index)

    def cpu(self) -> Segmentation:
        """The same segmentation with its masks in host memory."""
        if self.masks.device.type == "cpu":
            return self
        segment_map = None if self.segment_map is None else self.segment_map.cpu()
        return dataclasses.replace(self, masks=self.masks.cpu(), segment_map=segment_map)


@dataclass(frozen=True)
class FrameResult:
    """A frame with its segmentation and, when rendering is on, the annotated image.

    Attributes:
        frame: the decoded input frame.
        segmentation: what the model found.
        annotated: (H, W, 3) uint8 RGB overlay, or None when nothing asked for it.
        stats: seconds spent per stage on this frame (its batch's time divided by the batch size);
            the sink thread adds one entry per output.
    """

    frame: Frame
    segmentation: Segmentation
    annotated: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def pts(self) -> int | None:
        return self.frame.pts

    @property
    def time(self) -> float:
        return self.frame.time

    @property
    def source(self) -> str:
        return self.frame.source
