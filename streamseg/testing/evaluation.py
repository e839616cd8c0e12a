"""Segmentation quality of a ``--save-masks`` export against ground truth in the same JSONL format.

Used on the shipped sample clip, whose ground truth is exact, to show that the whole pipeline
(decode → model → post-processing → export) segments correctly: a colour-channel swap, a misaligned
resize or frames out of order all lose accuracy here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import rle

__all__ = ["Quality", "semantic_miou", "panoptic_quality", "read_jsonl"]


@dataclass(frozen=True)
class Quality:
    """A score over the evaluated classes, with the per-class values it averages."""

    value: float
    per_class: dict[int, float]


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _label_map(record: dict) -> np.ndarray:
    out = np.full((record["height"], record["width"]), -1, dtype=np.int64)
    for seg in record["segments"]:
        out[rle.decode(seg["rle"])] = seg["label_id"]
    return out


def _paired(pred: list[dict], truth: list[dict]) -> Iterable[tuple[dict, dict]]:
    by_frame = {r["frame"]: r for r in truth}
    if len(pred) != len(truth) or any(r["frame"] not in by_frame for r in pred):
        raise ValueError(f"export has {len(pred)} frames, ground truth {len(truth)}; they must match frame by frame")
    return ((p, by_frame[p["frame"]]) for p in pred)


def semantic_miou(pred: list[dict], truth: list[dict], classes: Iterable[int]) -> Quality:
    """Mean IoU over ``classes`` of the per-pixel label maps, accumulated over all frames."""
    classes = list(classes)
    inter = dict.fromkeys(classes, 0)
    union = dict.fromkeys(classes, 0)
    for p, t in _paired(pred, truth):
        pm, tm = _label_map(p), _label_map(t)
        for c in classes:
            a, b = pm == c, tm == c
            inter[c] += int(np.logical_and(a, b).sum())
            union[c] += int(np.logical_or(a, b).sum())
    per_class = {c: inter[c] / union[c] for c in classes if union[c] > 0}
    return Quality(float(np.mean(list(per_class.values()))), per_class)


def panoptic_quality(pred: list[dict], truth: list[dict], classes: Iterable[int]) -> Quality:
    """PQ (Kirillov et al.) over ``classes``: segments match when same class and IoU > 0.5."""
    classes = list(classes)
    iou_sum = dict.fromkeys(classes, 0.0)
    tp, fp, fn = dict.fromkeys(classes, 0), dict.fromkeys(classes, 0), dict.fromkeys(classes, 0)
    for p, t in _paired(pred, truth):
        for c in classes:
            preds = [rle.decode(s["rle"]) for s in p["segments"] if s["label_id"] == c]
            gts = [rle.decode(s["rle"]) for s in t["segments"] if s["label_id"] == c]
            matched_pred: set[int] = set()
            for g in gts:
                hit = None
                for j, m in enumerate(preds):
                    if j in matched_pred:
                        continue
                    union = np.logical_or(g, m).sum()
                    iou = np.logical_and(g, m).sum() / union if union else 0.0
                    if iou > 0.5:  # at most one prediction can pass: IoU > 0.5 matches are unique
                        hit = (j, iou)
                        break
                if hit is None:
                    fn[c] += 1
                else:
                    matched_pred.add(hit[0])
                    tp[c] += 1
                    iou_sum[c] += float(hit[1])
            fp[c] += len(preds) - len(matched_pred)
    per_class = {
        c: iou_sum[c] / (tp[c] + 0.5 * fp[c] + 0.5 * fn[c]) for c in classes if tp[c] + fp[c] + fn[c] > 0
    }
    return Quality(float(np.mean(list(per_class.values()))), per_class)
