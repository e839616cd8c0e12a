"""COCO files: detection results (``pycocotools``' ``COCO.loadRes`` reads them) for instance and semantic
runs, and COCO's panoptic format (a JSON and a folder of PNGs) for panoptic runs.

A frame's ``image_id`` is its number in its source (for a job over images, the image's place in the
job's order), so a results file lines up with a ground truth that numbers its images that way. The file
is written when the run ends (the JSONL from ``--save-masks`` is the record that survives a crash).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2

from ..exceptions import SinkError
from ..types import FrameResult
from .base import Sink
from .jsonl import result_record
from .labels import label_image

__all__ = ["CocoSink"]


class CocoSink(Sink):
    """One COCO file for one source's frames. Instance and semantic: a list of results, each with
    ``image_id``, ``category_id``, RLE ``segmentation``, ``score`` (1.0 for semantic, which has none),
    ``bbox`` ([x, y, w, h]) and ``area``. Panoptic: ``{"images", "annotations", "categories"}`` with a PNG a
    frame (COCO's id = R + 256 G + 256² B) in the folder named like the file without its suffix."""

    stage = "coco"
    wants_masks = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.folder = self.path.with_suffix("")
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.categories: dict[int, str] = {}
        self.task = ""

    def write(self, result: FrameResult) -> None:
        frame, seg = result.frame, result.segmentation
        self.task = seg.task
        self.categories.update(seg.id2label)
        image = {"id": frame.index, "width": frame.width, "height": frame.height,
                 "file_name": Path(frame.item).name if frame.item else f"{frame.source}-{frame.index:06d}.png"}
        self.images.append(image)
        record = result_record(result)
        if seg.task == "panoptic":
            self._panoptic(result, image, record)
            return
        for segment in record["segments"]:
            score = segment["score"]
            self.results.append({"image_id": frame.index, "category_id": segment["label_id"],
                                 "segmentation": segment["rle"], "score": 1.0 if score is None else score,
                                 "bbox": segment["bbox"], "area": segment["area"]})

    def _panoptic(self, result: FrameResult, image: dict, record: dict) -> None:
        png = f"{Path(image['file_name']).stem}.png"
        labels, values = label_image(result.segmentation)
        try:
            self.folder.mkdir(exist_ok=True)
            if not cv2.imwrite(str(self.folder / png), cv2.cvtColor(labels, cv2.COLOR_RGB2BGR)):
                raise OSError(0, "cannot write")
        except OSError as exc:
            raise SinkError(f"{self.folder / png}: cannot write ({exc.strerror or exc})") from None
        self.results.append({"image_id": image["id"], "file_name": png, "segments_info": [
            {"id": value, "category_id": s["label_id"], "area": s["area"], "bbox": s["bbox"], "iscrowd": 0,
             "score": s["score"]} for value, s in zip(values, record["segments"])]})

    def close(self) -> None:
        if not self.images:
            return
        categories = [{"id": k, "name": name} for k, name in sorted(self.categories.items())]
        content: Any = self.results if self.task != "panoptic" else {
            "images": self.images, "annotations": self.results, "categories": categories}
        part = self.path.with_name(self.path.name + ".part")
        try:
            part.write_text(json.dumps(content))
            os.replace(part, self.path)  # never a half-written file under the real name
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
