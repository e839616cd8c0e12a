"""The tracking stage: between post-processing and drawing, one :class:`~.tracker.Tracker` per source.

Per batch, the features of every thing segment and the matrices against each source's tracks (their
latest masks and embeddings, and the embeddings they are remembered by) are made on the device, and the
matrices of all sources come to the host in one copy: a batch, not a frame, waits for the device, and
post-processing already waits once a batch. The tracks' features stay on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from ..config import Config, TrackingConfig
from ..ops import upload_each
from ..types import Frame, Segmentation
from .features import Features, affinities, feature_index, thing_features
from .tracker import Candidate, Tracker

__all__ = ["Tracking", "tracking_for"]


class Tracking:
    """Gives the thing segments of each source's frames their track ids.

    Args:
        settings: the association's knobs.
        stuff: label ids that are stuff (they keep their class and get no track); every other class of an
            instance or panoptic segmentation is a thing.
    """

    def __init__(self, settings: TrackingConfig, stuff: frozenset[int] = frozenset()) -> None:
        self.settings = settings
        self.stuff = stuff
        self._trackers: dict[str, Tracker] = {}
        self._banks: dict[str, Features] = {}  # each track's latest appearance, in its tracker's order
        self._memories: dict[str, torch.Tensor] = {}  # each track's remembered embedding (see tracker)

    def update(self, frames: Sequence[Frame], segs: Sequence[Segmentation],
               embeddings: torch.Tensor) -> list[Segmentation]:
        """``segs`` (one per frame, in order) with ``track_ids`` set; ``embeddings`` is the batch's (B, Q, D)."""
        out = list(segs)
        groups: dict[str, list[int]] = {}
        for b, (frame, seg) in enumerate(zip(frames, segs)):
            if seg.task != "semantic" and seg.queries is not None and frame.item is None:  # not an image job's
                groups.setdefault(frame.source, []).append(b)
        if not groups:
            return out
        things = {b: [k for k, label in enumerate(segs[b].label_ids) if label not in self.stuff and segs[b].areas[k]]
                  for members in groups.values() for b in members}
        picked = [b for b, chosen in things.items() if chosen]
        index = dict(zip(picked, upload_each([feature_index(segs[b], things[b]) for b in picked], embeddings.device)))
        matrices, shapes = [], []
        for source, members in groups.items():
            bank = self._banks.get(source)
            if bank is None:
                bank = self._banks[source] = Features.empty(embeddings.shape[-1], embeddings.device)
                self._memories[source] = bank.embeddings
            new = [thing_features(segs[b], index[b], embeddings[b]) for b in members if things[b]]
            batch = bank if not new else bank.cat(Features(torch.cat([f.masks for f in new]),
                                                           torch.cat([f.embeddings for f in new])))
            columns = Features(batch.masks[len(bank):], batch.embeddings[len(bank):])
            matrices += [affinities(batch, columns).flatten(), (self._memories[source] @ columns.embeddings.T).flatten()]
            shapes.append((len(batch), len(batch) - len(bank), len(bank)))
            self._banks[source] = batch
        host = torch.cat(matrices).cpu().split([n for r, c, t in shapes for n in (2 * r * c, t * c)])  # the one wait
        for g, ((source, members), (rows, cols, tracks)) in enumerate(zip(groups.items(), shapes)):
            tracker = self._trackers.setdefault(source, Tracker(self.settings))
            iou, similarity = host[2 * g].view(2, rows, cols).numpy()
            tracker.begin(iou, similarity, host[2 * g + 1].view(tracks, cols).numpy())
            column = 0
            for b in members:
                seg = segs[b]
                candidates = []
                for k in things[b]:
                    candidates.append(Candidate(column, seg.label_ids[k], float(seg.scores[k] or 0.0), seg.boxes[k]))
                    column += 1
                assigned = tracker.step(frames[b].time, candidates)
                track_ids: list[int | None] = [None] * len(seg)
                label_ids = list(seg.label_ids)
                for k, (track_id, label_id) in zip(things[b], assigned):
                    track_ids[k], label_ids[k] = track_id, label_id
                out[b] = dataclasses.replace(seg, track_ids=track_ids, label_ids=label_ids)
            batch = self._banks[source]
            refs, memories = upload_each([torch.tensor(tracker.refs(), dtype=torch.int64),
                                          torch.tensor(tracker.memories(), dtype=torch.int64)], batch.masks.device)
            self._banks[source] = batch.take(refs)
            self._memories[source] = torch.cat([self._memories[source], batch.embeddings]).index_select(0, memories)
        return out


def tracking_for(config: Config, task: str) -> Tracking | None:
    """The tracking stage a run of ``task`` gets, or None (turned off; semantic segments have no things).
    Stuff classes are ``tracking.stuff``, or, where it is empty, those whose queries a panoptic model fuses
    (``postprocess.label_ids_to_fuse``)."""
    if not config.tracking.enabled or task == "semantic":
        return None
    stuff = config.tracking.stuff or (config.postprocess.label_ids_to_fuse if task == "panoptic" else ())
    return Tracking(config.tracking, frozenset(stuff))
