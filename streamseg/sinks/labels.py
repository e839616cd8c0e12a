"""Label maps: one lossless PNG a frame, with a JSON beside it that says which segment each value is.

- semantic: 16-bit class ids, 65535 where no class is;
- panoptic: COCO's panoptic encoding, id = R + 256 G + 256² B of the segment's id (the JSONL's ``id``), 0
  where no segment is;
- instance: 16-bit values, k + 1 for the k-th instance (the JSONL's ``id`` is k), 0 where none is; where
  instances overlap, the later one's value.

Each ``<name>.json`` holds the frame's ``source``, ``frame``, ``time`` and ``segments_info``: per segment its
``value`` in the map, ``id``, ``category_id`` (the label id), ``label``, ``score``, ``area`` and COCO
``bbox`` ([x, y, width, height]).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..exceptions import SinkError
from ..types import FrameResult, Segmentation
from .base import Sink

__all__ = ["LabelSink", "NO_CLASS", "label_image"]

NO_CLASS = 65535  # a semantic map's value where no class is


def label_image(seg: Segmentation) -> tuple[np.ndarray, list[int]]:
    """The map to write for ``seg`` (uint16 (H, W), or uint8 (H, W, 3) RGB for panoptic) and each segment's
    value in it."""
    index = seg.index_map().cpu().numpy()
    if seg.task == "semantic":
        values = list(seg.label_ids)
        return np.array([NO_CLASS, *values], dtype=np.uint16)[index], values
    if seg.task == "panoptic":
        values = list(seg.ids)
        ids = np.array([0, *values], dtype=np.uint32)[index]
        return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8), values
    values = [k + 1 for k in range(len(seg))]
    return index.astype(np.uint16), values


class LabelSink(Sink):
    """Writes every frame's label map and its JSON into ``folder``: ``<tag>-<frame>.png`` for a video's
    frames (``cam-000042.png``), the image's own name for a job over images (``a.jpg`` gives ``a.png``)."""

    stage = "labels"
    wants_masks = True

    def __init__(self, folder: str | Path, tag: str) -> None:
        self.folder = str(folder)
        self.tag = tag
        self.written = 0

    def open(self) -> None:
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{self.folder}: cannot make this folder ({exc.strerror or exc})") from None

    def write(self, result: FrameResult) -> None:
        frame, seg = result.frame, result.segmentation
        stem = Path(frame.item).stem if frame.item else f"{self.tag}-{frame.index:06d}"
        image, values = label_image(seg)
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        target = os.path.join(self.folder, stem)
        info = {"source": frame.item or frame.source, "frame": frame.index, "time": frame.time, "task": seg.task,
                "file_name": f"{stem}.png", "segments_info": [
                    {"value": value, "id": i, "category_id": label_id, "label": label, "score": score,
                     "area": area, "bbox": list(box), "iscrowd": 0}
                    for value, i, label_id, label, score, area, box in zip(
                        values, seg.ids, seg.label_ids, seg.labels, seg.scores, seg.areas, seg.boxes)]}
        try:
            if not cv2.imwrite(f"{target}.png", image):
                raise SinkError(f"{target}.png: cannot write")
            Path(f"{target}.json").write_text(json.dumps(info))
        except OSError as exc:
            raise SinkError(f"{target}: cannot write ({exc.strerror or exc})") from None
        self.written += 1
