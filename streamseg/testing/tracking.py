"""Tracking quality against ground truth: HOTA, IDF1 and ID switches, computed by TrackEval's metrics.

Predictions and truth are read from the ``--save-masks`` JSONL (the truth from
:func:`~.synthetic.truth_record`) or from a ``--save-tracks`` MOTS file; a prediction and a truth object
of one frame are compared by the IoU of their masks (pycocotools). Two baselines give the same segments
other identities, for comparison: greedy IoU matching with the previous frames (as detectron2's video
visualizer colours instances) and ByteTrack on the segments' boxes, from Roboflow's ``trackers`` (where
supervision's ByteTrack moved; it works on supervision's Detections).

Needs the test extra: trackeval, pycocotools, supervision, trackers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluation import read_jsonl

__all__ = ["Objects", "TrackScore", "bytetrack_ids", "greedy_iou_ids", "oracle_ids", "read_jsonl_tracks", "read_mots",
           "score", "shuffled"]


@dataclass(frozen=True)
class Objects:
    """One frame's tracked objects: ids, COCO RLEs (``{"size", "counts"}``) of their masks, and, where
    read from a JSONL, their scores and label ids."""

    frame: int
    ids: list[int]
    rles: list[dict]
    scores: list[float] = dataclasses.field(default_factory=list)
    labels: list[int] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class TrackScore:
    hota: float
    idf1: float
    id_switches: int
    mota: float


def read_jsonl_tracks(path: str | Path, things: Collection[int], *, tracked: bool = True) -> list[Objects]:
    """The thing segments (label ids in ``things``), frame by frame: those with a ``track_id``, as their ids;
    or, not ``tracked``, all of them, numbered within their frame (for a baseline to give ids to)."""
    out = []
    for record in read_jsonl(path):
        kept = [s for s in record["segments"] if s["label_id"] in things and (s.get("track_id") or not tracked)]
        ids = [int(s["track_id"]) for s in kept] if tracked else list(range(len(kept)))
        out.append(Objects(record["frame"], ids, [s["rle"] for s in kept], [s.get("score") or 1.0 for s in kept],
                           [s["label_id"] for s in kept]))
    return out


def read_mots(path: str | Path) -> list[Objects]:
    """A MOTS text file (``frame track_id class_id height width rle`` per line) as frames in order."""
    frames: dict[int, Objects] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            frame, track_id, _, height, width, counts = line.split(" ", 5)
            objects = frames.setdefault(int(frame), Objects(int(frame), [], []))
            objects.ids.append(int(track_id))
            objects.rles.append({"size": [int(height), int(width)], "counts": counts.strip()})
    return [frames[k] for k in sorted(frames)]


def score(predicted: Iterable[Objects], truth: Iterable[Objects]) -> TrackScore:
    """HOTA, IDF1, ID switches and MOTA of ``predicted`` against ``truth`` over the frames ``predicted`` has
    (truth's other frames are left out: a run that segments every second frame is scored on those)."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    by_frame = {o.frame: o for o in truth}
    pred = list(predicted)
    missing = [o.frame for o in pred if o.frame not in by_frame]
    if missing:
        raise ValueError(f"frames {missing[:5]} have no ground truth")
    gts = [by_frame[o.frame] for o in pred]
    # TrackEval wants ids numbered 0..n-1 in each of the two sets.
    gt_index = {i: k for k, i in enumerate(sorted({i for o in gts for i in o.ids}))}
    pred_index = {i: k for k, i in enumerate(sorted({i for o in pred for i in o.ids}))}
    similarity = [_ious(g.rles, p.rles) for p, g in zip(pred, gts)]
    data = {
        "num_timesteps": len(pred), "num_gt_ids": len(gt_index), "num_tracker_ids": len(pred_index),
        "num_gt_dets": sum(len(g.ids) for g in gts), "num_tracker_dets": sum(len(p.ids) for p in pred),
        "gt_ids": [np.array([gt_index[i] for i in g.ids], dtype=int) for g in gts],
        "tracker_ids": [np.array([pred_index[i] for i in p.ids], dtype=int) for p in pred],
        "similarity_scores": similarity,
    }
    quiet = {"PRINT_CONFIG": False}
    hota = HOTA(quiet).eval_sequence(data)
    identity = Identity(quiet).eval_sequence(data)
    clear = CLEAR(quiet).eval_sequence(data)
    return TrackScore(hota=float(np.mean(hota["HOTA"])), idf1=float(identity["IDF1"]),
                      id_switches=int(clear["IDSW"]), mota=float(clear["MOTA"]))


def _ious(rows: list[dict], columns: list[dict]) -> np.ndarray:
    """(len(rows), len(columns)): the IoU of each pair of RLE masks (pycocotools, which wants bytes)."""
    from pycocotools import mask as mask_utils

    if not rows or not columns:
        return np.zeros((len(rows), len(columns)))
    return np.asarray(mask_utils.iou(_coco(rows), _coco(columns), [0] * len(columns)))


def _coco(rles: list[dict]) -> list[dict]:
    """RLEs as pycocotools takes them: counts as bytes."""
    return [{"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}
            for r in rles]


def shuffled(frames: list[Objects], seed: int = 0) -> list[Objects]:
    """The same masks with each frame's ids shuffled among its objects: what a tracker that keeps no
    identity would give, to show the metric can fail."""
    rng = np.random.default_rng(seed)
    return [dataclasses.replace(o, ids=[int(i) for i in rng.permutation(o.ids)]) for o in frames]


def oracle_ids(frames: list[Objects], truth: Iterable[Objects], *, threshold: float = 0.5) -> list[Objects]:
    """Each object given the id of the truth object its mask overlaps most (IoU at least ``threshold``), the
    others left out: what a tracker that never errs would make of these segments, whose score bounds what
    any tracker can reach on them."""
    by_frame = {o.frame: o for o in truth}
    out = []
    for o in frames:
        g = by_frame[o.frame]
        ious = _ious(o.rles, g.rles)
        kept = [k for k in range(len(o.rles)) if len(g.ids) and ious[k].max() >= threshold]
        out.append(Objects(o.frame, [g.ids[int(ious[k].argmax())] for k in kept], [o.rles[k] for k in kept]))
    return out


def greedy_iou_ids(frames: list[Objects], *, threshold: float = 0.5, ttl: int = 8) -> list[Objects]:
    """New ids for ``frames``' objects by greedy IoU matching, as detectron2's video visualizer does: each
    object, in order, takes the unclaimed recent object (seen in the last ``ttl`` frames) it overlaps most,
    if their IoU is at least ``threshold``, else a new id."""
    recent: list[tuple[int, dict, int]] = []  # id, rle, frames left
    next_id, out = 1, []
    for o in frames:
        ious = _ious(o.rles, [r for _, r, _ in recent])
        claimed: set[int] = set()
        ids = []
        for k in range(len(o.rles)):
            order = [j for j in np.argsort(-ious[k]) if j not in claimed and ious[k, j] >= threshold] if recent else []
            if order:
                claimed.add(int(order[0]))
                ids.append(recent[order[0]][0])
            else:
                ids.append(next_id)
                next_id += 1
        kept = [(i, r, ttl) for i, r in zip(ids, o.rles)]
        recent = kept + [(i, r, left - 1) for j, (i, r, left) in enumerate(recent) if j not in claimed and left > 1]
        out.append(dataclasses.replace(o, ids=ids))
    return out


def bytetrack_ids(frames: list[Objects], *, frame_rate: int = 30) -> list[Objects]:
    """New ids for ``frames``' objects from ByteTrack (``trackers.ByteTrackTracker``, with its defaults) on
    their boxes; objects it does not track in a frame are left out of that frame."""
    import supervision as sv
    from pycocotools import mask as mask_utils
    from trackers import ByteTrackTracker

    tracker = ByteTrackTracker(frame_rate=frame_rate)
    out = []
    for o in frames:
        boxes = np.array(mask_utils.toBbox(_coco(o.rles)), dtype=np.float32).reshape(-1, 4) if o.rles else \
            np.zeros((0, 4), dtype=np.float32)
        boxes[:, 2:] += boxes[:, :2]
        detections = sv.Detections(xyxy=boxes, confidence=np.array(o.scores, dtype=np.float32),
                                   class_id=np.array(o.labels, dtype=int), data={"index": np.arange(len(boxes))})
        tracked = tracker.update(detections)
        kept = [k for k, i in enumerate(tracked.tracker_id) if i >= 0]
        out.append(Objects(o.frame, [int(tracked.tracker_id[k]) for k in kept],
                           [o.rles[int(tracked.data["index"][k])] for k in kept]))
    return out
