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

__all__ = ["TracksSink", "mots_lines"]


def mots_lines(result: FrameResult) -> list[str]:
    """The MOTS lines of one frame's tracked segments."""
    seg = result.segmentation
    tracked = [k for k, t in enumerate(seg.track_ids or ()) if t is not None]
    if not tracked:
        return []
    if seg.segment_map is not None:  # never overlapping: the masks as every export has them
        counts = [seg.rles[k]["counts"] for k in tracked]
    else:
        stack = seg.masks.cpu().numpy()[tracked]
        taken = np.zeros(seg.size, dtype=bool)
        for mask in stack:  # segments come best first: an overlap stays with the earlier
            mask &= ~taken
            taken |= mask
        counts = [r["counts"] for r in rle.encode_masks(stack)]
    height, width = seg.size
    return [f"{result.frame.index} {seg.track_ids[k]} {seg.label_ids[k]} {height} {width} {c}"
            for k, c in zip(tracked, counts)]


class TracksSink(LinesSink):
    """Writes one source's tracks to a MOTS text file."""

    stage = "tracks"

    def lines(self, result: FrameResult) -> list[str]:
        return mots_lines(result)
