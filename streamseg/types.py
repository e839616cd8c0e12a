"""The data that crosses stage boundaries: decoded frames and per-frame results."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from . import rle
from .ops import download, frames_at_once, grouped, lookup
from .yuv import YUV_FORMATS, YUV_MATRICES, yuv_to_rgb

__all__ = ["TASKS", "Frame", "FrameResult", "Segmentation", "to_host"]

TASKS = ("semantic", "instance", "panoptic")
@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        pixels: (H, W, 3) uint8 RGB; or, when ``pixel_format`` is "yuv420p" or "nv12", the decoder's
            (H * 3 / 2, W) uint8 YUV 4:2:0, which a GPU turns into RGB itself (half the bytes to upload,
            no conversion on the host); NV12 may be a tensor already on the GPU (NVDEC's frames, kept there).
        index: position in its source, from 0.
        pts: presentation timestamp in ``time_base`` units, as the source gave it (None if it gave none).
        time_base: unit of ``pts`` in seconds.
        time: seconds since the start of the source (or wall-clock seconds for a live source).
        source: name of the source that produced it.
        captured: ``time.monotonic()`` when the frame was decoded, for latency figures.
        decode_s: seconds spent decoding and converting this frame.
        dropped: frames of a live source discarded, unprocessed, since the previous delivered one.
        pixel_format: "rgb24", "yuv420p" or "nv12".
        matrix: for YUV pixels, "bt601" or "bt709" (limited range).
        item: which input of its source the frame is, where a source holds several (an image's path in a
            folder's job); None for a video.
    """

    pixels: np.ndarray | torch.Tensor
    index: int
    pts: int | None
    time_base: Fraction
    time: float
    source: str = "0"
    captured: float = 0.0
    decode_s: float = 0.0
    dropped: int = 0
    pixel_format: str = "rgb24"
    matrix: str = "bt601"
    item: str | None = None

    def __post_init__(self) -> None:
        p = self.pixels
        if isinstance(p, torch.Tensor) and self.pixel_format != "nv12":
            raise ValueError(f"only NV12 pixels may be a tensor, got {self.pixel_format}")
        if self.pixel_format == "rgb24":
            if p.ndim != 3 or p.shape[2] != 3 or p.dtype != np.uint8:
                raise ValueError(f"RGB pixels must be (H, W, 3) uint8, got {p.shape} {p.dtype}")
        elif self.pixel_format in YUV_FORMATS:
            if p.ndim != 2 or p.shape[0] % 3 or p.shape[1] % 2 or p.dtype not in (np.uint8, torch.uint8):
                raise ValueError(f"YUV 4:2:0 pixels must be (H * 3 / 2, W) uint8 with H and W even, got "
                                 f"{p.shape} {p.dtype}")
            if self.matrix not in YUV_MATRICES:
                raise ValueError(f"matrix must be one of {YUV_MATRICES}, got {self.matrix!r}")
        else:
            raise ValueError(f"pixel_format must be rgb24 or one of {YUV_FORMATS}, got {self.pixel_format!r}")

    @functools.cached_property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB; for YUV pixels, converted by FFmpeg on first use, as a decoder's frame would be."""
        if self.pixel_format == "rgb24":
            return self.pixels
        pixels = self.pixels.cpu().numpy() if isinstance(self.pixels, torch.Tensor) else self.pixels
        return yuv_to_rgb(pixels, self.pixel_format, self.matrix)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0] if self.pixel_format == "rgb24" else self.pixels.shape[0] * 2 // 3)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class Segmentation:
    """The segments found in one frame, as transformers' post-processing defines them.

    Segments that never overlap (semantic, panoptic) are held as one map; segments that may overlap
    (instance) as a stack of masks. ``masks`` gives either as (N, H, W) masks, made from the map on
    first use, so runs that only draw or export never build N full-size masks.

    Attributes:
        task: "semantic", "instance" or "panoptic".
        ids: segment ids (panoptic: from 1, fused segments share one; instance: from 0; semantic: the label id).
        label_ids: class of each segment.
        scores: confidence of each segment (None for semantic segments).
        areas: pixel count of each mask.
        boxes: (x, y, w, h) bounding box of each mask.
        size: (height, width) of the frame.
        id2label: class names by label id.
        segment_map: (H, W) int32, k + 1 where segment k is and 0 elsewhere, for segments that never overlap.
        mask_stack: (N, H, W) bool, one mask per segment, for segments that may overlap.
        queries: the model's query behind each segment (a fused segment's first), whose decoder embedding
            the tracker compares across frames; None for semantic segments.
        track_ids: each segment's identity across frames (see :mod:`streamseg.tracking`): an integer from 1,
            unique in its source and never reused, for a confirmed track; None for stuff, for a thing not
            yet confirmed, and for every segment when tracking is off (then the list itself is None).
    """

    task: str
    ids: list[int]
    label_ids: list[int]
    scores: list[float | None]
    areas: list[int]
    boxes: list[tuple[int, int, int, int]]
    size: tuple[int, int]
    id2label: dict[int, str] = field(default_factory=dict, repr=False)
    segment_map: torch.Tensor | None = field(default=None, repr=False)
    mask_stack: torch.Tensor | None = field(default=None, repr=False)
    queries: list[int] | None = field(default=None, repr=False)
    track_ids: list[int | None] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        n = len(self.ids)
        counts = [len(self.label_ids), len(self.scores), len(self.areas), len(self.boxes)]
        counts += [len(x) for x in (self.queries, self.track_ids) if x is not None]
        if any(c != n for c in counts):
            raise ValueError(f"{n} ids but labels, scores, areas, boxes (queries, track ids) number {counts}")
        size = tuple(self.size)
        if self.segment_map is not None and (self.segment_map.shape != size or self.segment_map.dtype != torch.int32):
            raise ValueError(f"segment_map must be {size} int32, got {tuple(self.segment_map.shape)} "
                             f"{self.segment_map.dtype}")
        if self.mask_stack is not None and (self.mask_stack.shape != (n, *size) or self.mask_stack.dtype != torch.bool):
            raise ValueError(f"mask_stack must be {(n, *size)} bool, got {tuple(self.mask_stack.shape)} "
                             f"{self.mask_stack.dtype}")
        if n and self.segment_map is None and self.mask_stack is None:
            raise ValueError(f"{n} segments need a segment_map or a mask_stack")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> list[str]:
        """Class names of the segments."""
        return [self.id2label.get(i, str(i)) for i in self.label_ids]

    @property
    def device(self) -> torch.device:
        """Where the masks are."""
        for t in (self.segment_map, self.mask_stack):
            if t is not None:
                return t.device
        return torch.device("cpu")

    @functools.cached_property
    def masks(self) -> torch.Tensor:
        """(N, H, W) bool, one mask per segment; semantic and panoptic masks never overlap."""
        if self.mask_stack is not None:
            return self.mask_stack
        if self.segment_map is None:
            return torch.zeros((0, *self.size), dtype=torch.bool)
        ids = torch.arange(1, len(self) + 1, dtype=torch.int32, device=self.segment_map.device)
        return self.segment_map[None] == ids[:, None, None]

    @functools.cached_property
    def rles(self) -> list[dict]:
        """Each segment's mask as COCO RLE (``{"size": [h, w], "counts": str}``), encoded once however many
        outputs export it (the JSONL, COCO and MOTS files are written by threads of their own)."""
        if self.segment_map is not None:  # one pass over the map for every segment, no mask needed
            return rle.encode_map(self.segment_map.cpu().numpy(), len(self))
        return rle.encode_masks(self.masks.cpu().numpy())

    def index_map(self) -> torch.Tensor:
        """(H, W) int32: k + 1 where segment k is, 0 where none is; later segments win where they overlap."""
        if self.segment_map is not None:
            return self.segment_map
        if frames_at_once(self.device) and len(self):
            return last_mask_index(self.masks)  # one op for all masks: on a GPU each op is a launch
        # On the CPU, mask by mask, the larger of the map and k + 1 where mask k is (the later wins): in bytes
        # while the numbers fit, many times faster than masked_fill_.
        small = len(self) < 256
        out = torch.zeros(self.size, dtype=torch.uint8 if small else torch.int32, device=self.device)
        for k, mask in enumerate(self.masks):
            torch.maximum(out, (mask.view(torch.uint8) if small else mask.to(torch.int32)) * (k + 1), out=out)
        return out.to(torch.int32)

    def label_map(self) -> torch.Tensor:
        """(H, W) int64 map of label ids, -1 where no segment is; later segments win where they overlap."""
        index = self.index_map()
        table = torch.tensor([-1, *self.label_ids], dtype=torch.int64, device=index.device)
        return lookup(table, index)

    def only(self, label_ids: frozenset[int]) -> Segmentation:
        """The segments of these classes alone, each with its id; where the others were, no segment is."""
        keep = [k for k, label_id in enumerate(self.label_ids) if label_id in label_ids]
        if len(keep) == len(self):
            return self
        segment_map = self.segment_map
        if segment_map is not None:  # k + 1 of each kept segment becomes its new place + 1; the others 0
            table = torch.zeros(len(self) + 1, dtype=torch.int32, device=segment_map.device)
            table[[k + 1 for k in keep]] = torch.arange(1, len(keep) + 1, dtype=torch.int32, device=segment_map.device)
            segment_map = lookup(table, segment_map.mT).mT  # through its transpose: stays column-major
        return dataclasses.replace(
            self, ids=[self.ids[k] for k in keep], label_ids=[self.label_ids[k] for k in keep],
            scores=[self.scores[k] for k in keep], areas=[self.areas[k] for k in keep],
            boxes=[self.boxes[k] for k in keep], segment_map=segment_map,
            mask_stack=None if self.mask_stack is None else self.mask_stack[keep],
            queries=None if self.queries is None else [self.queries[k] for k in keep],
            track_ids=None if self.track_ids is None else [self.track_ids[k] for k in keep])

    def to_detections(self) -> Any:
        """The segments as ``supervision.Detections`` (boxes as x0, y0, x1, y1; masks; class ids; scores,
        None for semantic segments; ``data["class_name"]``), for supervision's annotators, zones and line
        counters. Needs the optional extra: ``pip install 'streamseg[supervision]'``."""
        try:
            import supervision
        except ImportError:
            raise ImportError("Segmentation.to_detections needs supervision: "
                              "pip install 'streamseg[supervision]'") from None
        n = len(self)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in self.boxes], dtype=np.float32).reshape(n, 4)
        masks = self.masks.cpu().numpy() if n else np.zeros((0, *self.size), dtype=bool)
        scores = None if self.task == "semantic" else np.array(self.scores, dtype=np.float32)
        return supervision.Detections(xyxy=boxes, mask=masks, class_id=np.array(self.label_ids, dtype=int),
                                      confidence=scores, data={"class_name": np.array(self.labels, dtype=str)})

    def cpu(self, *, wait: bool = True) -> Segmentation:
        """The same segmentation in host memory (for a map, the map alone is copied).

        Maps and masks arrive column-major (same shape and values): transposing is free on the device,
        and the RLE export reads them by columns, which would cost a transpose on the host.
        ``wait=False``: the copies are only queued on the current stream (see :func:`~.ops.download`).
        """
        if self.device.type == "cpu":
            return self
        return dataclasses.replace(
            self,
            segment_map=None if self.segment_map is None else _download_column_major(self.segment_map, wait),
            mask_stack=None if self.mask_stack is None else _download_column_major(self.mask_stack, wait),
        )


def to_host(segmentations: Sequence[Segmentation], *, wait: bool = True) -> list[Segmentation]:
    """``Segmentation.cpu`` for a batch: the maps (or mask stacks) of one size are copied together, one
    copy and one pinned buffer for them all instead of one a frame; each frame's part is a view of it."""
    out = list(segmentations)
    held = ["segment_map" if seg.segment_map is not None else "mask_stack" for seg in segmentations]
    keys = [None if seg.device.type == "cpu" else (name, seg.size) for seg, name in zip(segmentations, held)]
    for (part_name, _), members in grouped(keys).items():
        parts = [getattr(segmentations[i], part_name) for i in members]
        if part_name == "segment_map":  # (H, W) maps: one (B, H, W) copy
            host = list(_download_column_major(torch.stack(parts), wait))
        else:  # (N, H, W) stacks: their masks end to end
            host = _download_column_major(torch.cat(parts), wait).split([len(p) for p in parts])
        for i, part in zip(members, host):
            out[i] = dataclasses.replace(segmentations[i], **{part_name: part})
    return out


def _download_column_major(t: torch.Tensor, wait: bool) -> torch.Tensor:
    return download(column_major(t), wait=wait)


def last_mask_index(masks: torch.Tensor) -> torch.Tensor:
    """(H, W) int32: k + 1 for the last of (N, H, W) bool masks that holds a pixel, 0 where none does."""
    hit, last_from_end = masks.flip(0).to(torch.uint8).max(0)  # max(0): the first maximum, the last mask
    return torch.where(hit > 0, (len(masks) - last_from_end).to(torch.int32), 0)


def column_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its last two dimensions stored column by column: same shape, same values."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@dataclass(frozen=True)
class FrameResult:
    """A frame with its segmentation and, when rendering is on, the annotated image.

    Attributes:
        frame: the decoded input frame.
        segmentation: what the model found.
        drawn: the overlay as it came from the device, in ``drawn_format``: (H, W, 3) uint8 RGB, or
            (H * 3 / 2, W) uint8 planar YUV 4:2:0 (BT.601, limited range) made there for an encoder.
            None when nothing asked for it. ``annotated`` gives it as RGB.
        drawn_format: "rgb24" or "yuv420p".
        stats: seconds spent per stage on this frame (its batch's time divided by the batch size);
            the sink thread adds one entry per output.
        batch_size: how many frames its batch held (the batcher fills batches only as frames come).
    """

    frame: Frame
    segmentation: Segmentation
    drawn: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict, repr=False)
    drawn_format: str = "rgb24"
    batch_size: int = 1

    @functools.cached_property
    def annotated(self) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB overlay, or None when nothing asked for it; converted on first use
        when the device made YUV for an encoder."""
        if self.drawn is None or self.drawn_format == "rgb24":
            return self.drawn
        return yuv_to_rgb(self.drawn, self.drawn_format, "bt601")

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
