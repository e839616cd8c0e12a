"""Long files in parallel (``--chunk-seconds``): a file cut at its own keyframes into chunks that workers
run as inputs of their own, then joined without re-encoding.

- A chunk is a time range that starts on a keyframe, run as ``--start``/``--end`` runs one (a seek to the
  keyframe, every frame from there decoded, frames keeping their numbers and times), without sound.
- The join copies the chunks' encoded video one after another, each moved back to its place in the file,
  and the whole file's sound from the source, as a run over the whole file copies it: the frames'
  timestamps and the sound are those of the whole-file run.
- Each chunk tracks on its own; its tracks are stitched to the previous chunk's by mask overlap across the
  join (the last frames before it against the first after it), and every other id is renumbered after the
  ids before it, so that ids stay unique and never reused. A track hidden at the join is not seen there:
  it comes back with a new id, or none if it shows for fewer frames than confirm a track.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..config import Config
from ..demuxing import Damage, Timeline, packets
from ..rle import decode
from ..sinks.tracks import mots_lines_of_record

__all__ = ["Chunk", "Ids", "chunk_config", "join", "plan", "stitch"]

STITCH_FRAMES = 5  # a track is stitched by its masks in this many frames either side of a join
STITCH_IOU = 0.3  # the least mask overlap that makes two tracks one


@dataclass(frozen=True)
class Chunk:
    """A part of a file: from ``start`` (None: its beginning) up to ``end`` seconds (None: its end); ``pts`` is
    the source timestamp of its first frame, a keyframe."""

    index: int
    start: float | None
    end: float | None
    pts: int


def plan(path: str, seconds: float) -> list[Chunk]:
    """The chunks of a file, each starting on a keyframe at least ``seconds`` after the previous chunk's
    start (read from the packets, nothing decoded); one chunk for a file too short to cut."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        base, origin = stream.time_base, stream.start_time or 0
        starts: list[int] = []
        for packet in container.demux(stream):
            if packet.pts is None or not packet.is_keyframe:
                continue
            if not starts or float((packet.pts - starts[-1]) * base) >= seconds:
                starts.append(packet.pts)
    times = [float((pts - origin) * base) for pts in starts]  # as the reader computes a frame's time
    return [Chunk(k, times[k] if k else None, times[k + 1] if k + 1 < len(times) else None, starts[k])
            for k in range(len(starts))]


def chunk_config(config: Config, video: str, chunk: Chunk, paths: dict[str, str]) -> Config:
    """The config a worker runs one chunk of ``video`` with, its outputs at ``paths`` (video, masks); no sound
    (the join copies the whole file's), no tracks file (the join writes it from the masks)."""
    output = dataclasses.replace(config.output, audio=False, tracks=None, **paths)
    return dataclasses.replace(config, sources=(video,), start=chunk.start, end=chunk.end, output=output)


def join(video: str, chunks: Sequence[Chunk], parts: Sequence[dict[str, str]], targets: dict[str, str]) -> None:
    """Join the chunks' outputs (``parts``, one dict a chunk: video, masks) into ``targets`` (video, masks,
    tracks); the masks' track ids stitched across each join, the tracks written from them."""
    stitched = stitch([part["masks"] for part in parts])
    if "video" in targets:
        _join_video(video, chunks, [part["video"] for part in parts], targets["video"])
    records = (_renumbered(json.loads(line), number, ids)
               for path, ids in zip((part["masks"] for part in parts), stitched)
               for number, line in enumerate(Path(path).read_text().splitlines()))
    with contextlib.ExitStack() as files:
        masks = files.enter_context(open(targets["masks"], "w", encoding="utf-8")) if "masks" in targets else None
        tracks = files.enter_context(open(targets["tracks"], "w", encoding="utf-8")) if "tracks" in targets else None
        for record in records:
            if masks is not None:
                masks.write(json.dumps(record) + "\n")
            if tracks is not None:
                tracks.writelines(line + "\n" for line in mots_lines_of_record(record))


@dataclass(frozen=True)
class Ids:
    """A chunk's track ids as the whole file's: ``ids`` maps each of its own ids; ``filled`` gives the
    segments it left without an id (a track not yet confirmed) that continue a track from before the join,
    by (record, segment) index, their id."""

    ids: dict[int, int]
    filled: dict[tuple[int, int], int]


def stitch(masks: Sequence[str]) -> list[Ids]:
    """Each chunk's track ids as the whole file's. The first chunk's stay as they are. A later chunk's track
    that overlaps (mask IoU >= STITCH_IOU, the same class) a track of the previous chunk's last frames takes
    its id, and so do the segments before it that the chunk's own tracker had not confirmed yet (a run over
    the whole file had, before the join); every other track gets a new id after all the ids before it."""
    from scipy.optimize import linear_sum_assignment

    stitched: list[Ids] = []
    before: dict[int, tuple[int, np.ndarray]] = {}  # global id -> (class, its last mask) near the join
    last = 0
    for path in masks:
        records = [json.loads(line) for line in Path(path).read_text().splitlines()]
        first = _track_masks(records[:STITCH_FRAMES], latest=False)
        mapping: dict[int, int] = {}
        if before and first:
            ours, theirs = list(first), list(before)
            iou = np.array([[_iou(first[a][1], before[b][1]) if first[a][0] == before[b][0] else 0.0
                             for b in theirs] for a in ours])
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] >= STITCH_IOU:
                    mapping[ours[r]] = theirs[c]
        filled = _fill_back(records[:STITCH_FRAMES], set(mapping))
        filled = {key: mapping[local] for key, local in filled.items()}
        for local in sorted({s["track_id"] for r in records for s in r["segments"] if s.get("track_id") is not None}):
            if local not in mapping:
                last += 1
                mapping[local] = last
        last = max([last, *mapping.values()])
        stitched.append(Ids(mapping, filled))
        ends = _track_masks(records[-STITCH_FRAMES:], latest=True)
        before = {mapping[t]: value for t, value in ends.items()}
    return stitched


def _fill_back(records: list[dict], continuing: set[int]) -> dict[tuple[int, int], int]:
    """The segments without an id in ``records`` that a ``continuing`` track's segment in the next record
    overlaps (IoU >= 0.5, the same class), walking back from the last record: (record, segment) -> its id."""
    filled: dict[tuple[int, int], int] = {}
    for r in range(len(records) - 2, -1, -1):
        later = [(s.get("track_id") if s.get("track_id") is not None else filled.get((r + 1, k)), s)
                 for k, s in enumerate(records[r + 1]["segments"])]
        for k, segment in enumerate(records[r]["segments"]):
            if segment.get("track_id") is not None:
                continue
            mask = decode(segment["rle"]).astype(bool)
            for track, other in later:
                if (track in continuing and other["label_id"] == segment["label_id"]
                        and _iou(mask, decode(other["rle"]).astype(bool)) >= 0.5):
                    filled[(r, k)] = track
                    break
    return filled


def _track_masks(records: list[dict], latest: bool) -> dict[int, tuple[int, np.ndarray]]:
    """Each track's class and mask in its first (or last) appearance among ``records``."""
    found: dict[int, tuple[int, np.ndarray]] = {}
    for record in reversed(records) if latest else records:
        for segment in record["segments"]:
            if (track := segment.get("track_id")) is not None and track not in found:
                found[track] = (segment["label_id"], decode(segment["rle"]).astype(bool))
    return found


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return 0.0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _renumbered(record: dict, number: int, ids: Ids) -> dict:
    """A chunk's JSONL record with its track ids as the whole file's."""
    for k, segment in enumerate(record["segments"]):
        if segment.get("track_id") is not None:
            segment["track_id"] = ids.ids[segment["track_id"]]
        elif (number, k) in ids.filled:
            segment["track_id"] = ids.filled[(number, k)]
    return record


def _join_video(video: str, chunks: Sequence[Chunk], parts: Sequence[str], target: str) -> None:
    """The chunks' video packets, each moved back to its chunk's place, and the source's sound, copied."""
    from ..sinks.video import crash_safe_options, sound_copy

    with av.open(video) as source, av.open(target, mode="w", options=crash_safe_options(target)) as out:
        source_base = source.streams.video[0].time_base
        with av.open(parts[0]) as first:
            picture = out.add_stream_from_template(first.streams.video[0])
        sound, unwrap = {}, {}
        for stream in source.streams.audio:
            try:  # the sound a run over the whole file copies: what this container cannot take is left out
                copied = sound_copy(out, stream)
            except (av.FFmpegError, ValueError):
                continue
            if copied is not None:
                sound[stream.index], filtered = copied
                if filtered is not None:
                    unwrap[stream.index] = filtered

        def video_packets() -> Iterator[av.Packet]:
            for chunk, part in zip(chunks, parts):
                with av.open(part) as container:
                    stream = container.streams.video[0]
                    # A chunk's file starts at 0 (a range is a clip of its own); the whole run's keeps the source's
                    # timestamps (moved to 0 only where they start below it).
                    offset = chunk.pts - min(chunks[0].pts, 0)
                    shift = round(Fraction(offset) * source_base / stream.time_base)
                    for packet in container.demux(stream):
                        if packet.dts is None:
                            continue
                        packet.pts = None if packet.pts is None else packet.pts + shift
                        packet.dts += shift
                        packet.stream = picture
                        yield packet

        def sound_packets() -> Iterator[av.Packet]:
            if not sound:
                return
            for packet in packets(source, [source.streams[i] for i in sound], Damage(), Timeline.of(source)):
                if packet.dts is None or packet.stream_index not in sound:
                    continue
                target_stream = sound[packet.stream_index]
                for one in unwrap[packet.stream_index].filter(packet) if packet.stream_index in unwrap else (packet,):
                    one.stream = target_stream
                    yield one

        for packet in _by_time(video_packets(), sound_packets()):
            out.mux(packet)


def _by_time(*feeds: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """The packets of several feeds, each in its own order, merged by their decoding time."""
    heads = [next(feed, None) for feed in feeds]
    while any(head is not None for head in heads):
        k = min((k for k, head in enumerate(heads) if head is not None),
                key=lambda k: float(heads[k].dts * heads[k].time_base))
        yield heads[k]
        heads[k] = next(feeds[k], None)
