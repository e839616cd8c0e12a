"""Tracks in the MOTS text format (MOTChallenge's and KITTI's MOTS, which TrackEval reads): one line per
tracked object per frame, ``frame track_id class_id height width rle``.

``frame`` is the frame's number in its source, ``class_id`` the model's label id and ``rle`` the mask as
COCO's compressed RLE string. Only confirmed tracks are written (a thing not yet confirmed has no id). MOTS
masks must not overlap: where instance masks do, the pixel stays with the higher-scoring segment, which
comes first. Lines are flushed a frame at a time, so an interrupted run keeps what it tracked.
"""

from __future__ import annotations

import numpy as np

from .. import rle
from ..types import FrameResult
from .jsonl import LinesSink

__all__ = ["TracksSink", "mots_lines", "mots_lines_of_record"]


def mots_lines(result: FrameResult) -> list[str]:
    """The MOTS lines of one frame's tracked segments."""
    seg = result.segmentation
    tracked = [k for k, t in enumerate(seg.track_ids or ()) if t is not None]
    if not tracked:
        return []
    if seg.segment_map is not None:  # never overlapping: the masks as every export has them
        counts = [seg.rles[k]["counts"] for k in tracked]
    else:
        counts = _exclusive_counts(seg.masks.cpu().numpy()[tracked])
    height, width = seg.size
    return [f"{result.frame.index} {seg.track_ids[k]} {seg.label_ids[k]} {height} {width} {c}"
            for k, c in zip(tracked, counts)]


def mots_lines_of_record(record: dict) -> list[str]:
    """The MOTS lines of one frame's tracked segments, from its JSONL record (what :func:`mots_lines` gives
    for the same frame)."""
    tracked = [s for s in record["segments"] if s.get("track_id") is not None]
    if not tracked:
        return []
    if record["task"] == "instance":
        counts = _exclusive_counts(np.stack([rle.decode(s["rle"]).astype(bool) for s in tracked]))
    else:
        counts = [s["rle"]["counts"] for s in tracked]
    return [f"{record['frame']} {s['track_id']} {s['label_id']} {record['height']} {record['width']} {c}"
            for s, c in zip(tracked, counts)]


def _exclusive_counts(stack: np.ndarray) -> list[str]:
    """The RLE counts of masks (best first) made not to overlap: an overlap stays with the earlier."""
    taken = np.zeros(stack.shape[1:], dtype=bool)
    for mask in stack:
        mask &= ~taken
        taken |= mask
    return [r["counts"] for r in rle.encode_masks(stack)]


class TracksSink(LinesSink):
    """Writes one source's tracks to a MOTS text file."""

    stage = "tracks"

    def lines(self, result: FrameResult) -> list[str]:
        return mots_lines(result)
