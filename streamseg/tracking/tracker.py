"""Identity over time for one source: which track each thing segment of a frame continues.

The tracker decides on the host, from small matrices its stage computes on the device (see
:mod:`.features`): for every track and every new segment, the overlap of their downscaled masks and the
cosine similarity of their decoder query embeddings. It adds what it knows about each track (class,
motion, when it was last seen) and solves one Hungarian assignment per frame.

A track is compared by its latest mask, but by the embedding it had when last seen *alone* (its box
overlapping no other thing's, its shape steady): where objects of one class pass over each other the
model may give them one segment or trade their queries, and an embedding taken there would carry the
track over to the other object when they part.

Rules, in the order a frame meets them:

- A pair may match when its masks overlap (IoU at least ``match_iou``) and its embeddings are not
  unlike (``min_similarity``; a strong overlap of one class needs no embedding), or, with no overlap (a
  track lost behind something, or frames dropped), when its embeddings agree (``reid_similarity``) and
  the segment lies near the path from where the track was last seen to where its motion says it is by
  now. A pair of different classes may match only on a strong overlap (a label that flips).
- A new segment that matches no track starts a *tentative* track. It is confirmed, and given an id, after
  ``min_hits`` matches in a row; a tentative track that misses a frame is dropped. Until confirmed, its
  segments carry no id: a one-frame flicker never becomes an identity, and ids count objects.
- A confirmed track that misses frames is kept for ``buffer_s`` seconds of the source's time, and can be
  re-identified in that time; then it ends. Ids are never reused.
- A track's class is the one with the most score over its history (with ``smooth_classes``), so a label
  does not flip for a frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..config import TrackingConfig

__all__ = ["Candidate", "Tracker"]

_NEVER = 1e9  # the cost of a pair the gates refuse
_RESHAPED = 0.2  # a box whose width or height changed by more than this share since the last frame
_SHRINK = 0.95  # a track's size follows a shrinking object by at most this factor a frame


@dataclass(frozen=True)
class Candidate:
    """A thing segment of the frame: its column in the batch's matrices, class, score and box (x, y, w, h)."""

    column: int
    label_id: int
    score: float
    box: tuple[int, int, int, int]


@dataclass
class _Track:
    ref: int  # its latest appearance: a row of the batch's matrices
    memory: int  # the embedding it is known by: a row of the batch's recall matrix (see ``begin``)
    label_id: int
    last_seen: float
    center: tuple[float, float]
    size: float  # the box's diagonal, pixels: the largest lately (a partly hidden object keeps its size)
    extent: tuple[int, int]  # the box's width and height
    hits: int = 1
    id: int | None = None  # given when confirmed
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels a second
    votes: dict[int, float] = field(default_factory=dict)
    alone: bool = True  # last seen alone: its box overlapping no other thing's, its shape steady

    def predicted(self, now: float) -> tuple[float, float]:
        dt = now - self.last_seen
        return self.center[0] + self.velocity[0] * dt, self.center[1] + self.velocity[1] * dt

    def predicted_box(self, now: float) -> tuple[float, float, float, float]:
        (x, y), (w, h) = self.predicted(now), self.extent
        return x - w / 2, y - h / 2, w, h


def _center(box: tuple[int, int, int, int]) -> tuple[float, float]:
    x, y, w, h = box
    return x + w / 2, y + h / 2


def _distance_to_path(point: tuple[float, float], start: tuple[float, float], end: tuple[float, float]) -> float:
    """How far ``point`` is from the straight path between ``start`` and ``end``."""
    (px, py), (ax, ay), (bx, by) = point, start, end
    dx, dy = bx - ax, by - ay
    length = dx * dx + dy * dy
    t = 0.0 if length == 0 else min(1.0, max(0.0, ((px - ax) * dx + (py - ay) * dy) / length))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


def _alone(candidates: Sequence[Candidate]) -> list[bool]:
    """For each candidate, whether no other thing covers more than a tenth of its box."""
    return [all(_intersection(cand.box, other.box) <= 0.1 * max(cand.box[2] * cand.box[3], 1)
                for j, other in enumerate(candidates) if j != k) for k, cand in enumerate(candidates)]


def _intersection(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The area two (x, y, w, h) boxes share."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """The tracks of one source. Call :meth:`begin` with each batch's matrices, then :meth:`step` for each of
    the source's frames in that batch, in order; :meth:`refs` then says which rows the next batch's bank
    takes."""

    def __init__(self, settings: TrackingConfig) -> None:
        self.settings = settings
        self.tracks: list[_Track] = []
        self.next_id = 1
        self._iou = np.zeros((0, 0))
        self._recall = np.zeros((0, 0))
        self._remembered = 0
        self._last_time: float | None = None

    def begin(self, iou: np.ndarray, similarity: np.ndarray, remembered: np.ndarray | None = None) -> None:
        """This batch's matrices. In ``iou`` and ``similarity`` rows are the bank (the tracks' latest
        appearances, in order), then the batch's thing segments; columns are the batch's thing segments.
        ``remembered`` has a row per track: its remembered embedding's similarity to each segment (None: the
        tracks are remembered as they were last seen). Moves each track's ``ref`` to its bank row."""
        remembered = similarity[: len(self.tracks)] if remembered is None else remembered
        self._iou = iou
        # The recall matrix: the tracks' memories, then the batch's segments (a memory refreshed in it).
        self._recall = np.concatenate([remembered, similarity]) if len(remembered) else similarity
        self._remembered = len(remembered)
        for row, track in enumerate(self.tracks):
            track.ref, track.memory = row, row

    def step(self, now: float, candidates: Sequence[Candidate]) -> list[tuple[int | None, int]]:
        """Match one frame's thing segments (``now``: its time in seconds) to the tracks.

        Returns, per candidate, its track id (None while its track is tentative) and its class (the
        track's smoothed class where it has a confirmed track)."""
        s = self.settings
        self._expire(now)
        recent = self._last_time
        self._last_time = now
        cost = np.full((len(self.tracks), len(candidates)), _NEVER)
        for t, track in enumerate(self.tracks):
            for c, cand in enumerate(candidates):
                cost[t, c] = self._cost(track, cand, now, track.last_seen == recent)
        matched: dict[int, int] = {}
        if cost.size:
            rows, cols = linear_sum_assignment(cost)
            matched = {int(c): int(t) for t, c in zip(rows, cols) if cost[t, c] < _NEVER}
        hit = set(matched.values())
        alone = _alone(candidates)
        # A tentative track that missed this frame is dropped.
        kept = [track for t, track in enumerate(self.tracks) if t in hit or track.id is not None]
        out: list[tuple[int | None, int]] = []
        for c, cand in enumerate(candidates):
            if c in matched:
                track = self.tracks[matched[c]]
                track.alone = self._update(track, cand, now) and alone[c]
                if track.alone:
                    track.memory = self._remembered + self._row(cand)
            else:
                track = _Track(ref=0, memory=self._remembered + self._row(cand), label_id=cand.label_id,
                               last_seen=now, center=_center(cand.box), size=math.hypot(cand.box[2], cand.box[3]),
                               extent=(cand.box[2], cand.box[3]), votes={cand.label_id: cand.score}, alone=alone[c])
                kept.append(track)
            track.ref = self._row(cand)
            if track.id is None and track.hits >= s.min_hits:
                track.id, self.next_id = self.next_id, self.next_id + 1
            label = track.label_id if (s.smooth_classes and track.id is not None) else cand.label_id
            out.append((track.id, label))
        self.tracks = kept
        return out

    def refs(self) -> list[int]:
        """Each live track's latest row in this batch's matrices, in the order of ``tracks``."""
        return [track.ref for track in self.tracks]

    def memories(self) -> list[int]:
        """Each live track's remembered embedding, in the order of ``tracks``: an index into the tracks'
        memories at the batch's start followed by the batch's rows."""
        return [track.memory for track in self.tracks]

    def _row(self, cand: Candidate) -> int:
        return self._iou.shape[0] - self._iou.shape[1] + cand.column

    def _cost(self, track: _Track, cand: Candidate, now: float, recent: bool) -> float:
        s = self.settings
        iou = float(self._iou[track.ref, cand.column])
        # Masks are the finer cue, and the cost's; a box where the track's motion puts it also lets a pair
        # through when an object's mask broke up for a frame (something passing over it).
        overlap = max(iou, _box_iou(track.predicted_box(now), cand.box))
        similarity = float(self._recall[track.memory, cand.column])
        same_class = cand.label_id == track.label_id or cand.label_id in track.votes
        # How far the segment is from the path between where the track was last seen and where its motion
        # puts it now (a motion misjudged as it went out of sight leads astray), in the track's sizes; the
        # reach grows with the time it has been unseen.
        distance = _distance_to_path(_center(cand.box), track.center, track.predicted(now)) / max(track.size, 1.0)
        reach = 0.5 + 1.5 * (now - track.last_seen)
        if not same_class and overlap < 0.5:
            return _NEVER
        # A strong overlap of one class is the same object whatever its embedding says (another query may
        # have taken it up); a weaker one needs the embeddings not to disagree.
        overlapping = overlap >= s.match_iou and (similarity >= s.min_similarity or (overlap >= 0.5 and same_class))
        reidentified = similarity >= s.reid_similarity and distance <= reach
        if not (overlapping or reidentified):
            return _NEVER
        closeness = max(0.0, 1.0 - distance / reach)
        # A track seen in the last frame goes first: a lost one only takes what no recent track claims. The
        # overlap ranks pairs only for a track last seen alone: a crowded track's mask may have been its
        # neighbour's too, and would pull it onto whichever of the two that mask covers more.
        return -((iou if track.alone else 0.0) + similarity + closeness + (1.0 if recent else 0.0))

    def _update(self, track: _Track, cand: Candidate, now: float) -> bool:
        """Moves ``track`` to ``cand``; False where the box's shape jumped."""
        center = _center(cand.box)
        dt = now - track.last_seen
        # A box whose shape jumped (the object partly hidden, merged with another or split from it) moved its
        # centre for another reason than motion: the velocity is kept as it was.
        (w, h), (pw, ph) = cand.box[2:], track.extent
        reshaped = abs(w - pw) > _RESHAPED * max(pw, 1) or abs(h - ph) > _RESHAPED * max(ph, 1)
        if dt > 0 and not reshaped:
            velocity = ((center[0] - track.center[0]) / dt, (center[1] - track.center[1]) / dt)
            if track.hits == 1:
                track.velocity = velocity
            else:  # smoothed: a mask's centre jitters from frame to frame
                track.velocity = tuple(0.6 * v + 0.4 * w for v, w in zip(track.velocity, velocity))  # type: ignore[assignment]
        track.center = center
        track.size = max(math.hypot(w, h), _SHRINK * track.size)
        track.extent = (cand.box[2], cand.box[3])
        track.last_seen = now
        track.hits += 1
        track.votes[cand.label_id] = track.votes.get(cand.label_id, 0.0) + cand.score
        track.label_id = max(track.votes, key=track.votes.__getitem__)
        return not reshaped

    def _expire(self, now: float) -> None:
        """Tracks unseen for longer than the buffer end (time going backwards, a new start, ends them all)."""
        buffer = self.settings.buffer_s
        self.tracks = [t for t in self.tracks if 0 <= now - t.last_seen <= buffer]
