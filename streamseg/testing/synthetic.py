"""Synthetic scenes with exact panoptic ground truth.

Used to train the small sample checkpoint in ``samples/`` and to check segmentation quality in tests:
unlike random weights, a model trained on these scenes loses accuracy visibly when a colour channel is
swapped, a resize is misaligned or frames come out of order.

A scene is a few moving, occluding "things" (three classes, each with its own shape and colour family)
over up to three "stuff" bands with wavy, drifting borders. Everything is a function of the seed and
the frame index, and geometry is in normalized coordinates, so a scene renders at any resolution.
Each thing has an identity (its ``track_id`` in the ground truth), for scoring tracking; the options
of :class:`Scene` add what makes tracking hard.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "truth_record",
    "write_clip",
    "LABELS",
    "STUFF_IDS",
    "THING_IDS",
    "FrameTruth",
    "Scene",
]

THING_CLASSES = ("ball", "box", "kite")
STUFF_CLASSES = ("sky", "ground", "water")
LABELS = THING_CLASSES + STUFF_CLASSES
THING_IDS = tuple(range(len(THING_CLASSES)))
STUFF_IDS = tuple(range(len(THING_CLASSES), len(LABELS)))

# Hue ranges (degrees) per thing class: saturated and far apart, so colour alone tells the classes apart.
_THING_HUES = ((-12.0, 12.0), (100.0, 140.0), (215.0, 250.0))
# Stuff colours are desaturated (HSV in 0..1): pale sky, brown ground, dark slate water.
_STUFF_HSV = ((0.58, 0.12, 0.90), (0.08, 0.30, 0.55), (0.55, 0.30, 0.35))


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of one rendered frame.

    Attributes:
        panoptic: (H, W) int32 segment ids, every pixel belongs to exactly one segment (ids from 1).
        segments: segment id -> label id, for the segments visible in this frame.
        tracks: segment id -> identity (from 1, the same in every frame) of the visible things.
    """

    panoptic: np.ndarray
    segments: dict[int, int]
    tracks: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def semantic(self) -> np.ndarray:
        """(H, W) label ids."""
        lut = np.zeros(int(self.panoptic.max()) + 1, dtype=np.int32)
        for seg_id, label in self.segments.items():
            lut[seg_id] = label
        return lut[self.panoptic]


@dataclass(frozen=True)
class _Thing:
    label: int
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    vx: float  # per frame
    vy: float
    size: float  # radius, fraction of height
    angle: float
    spin: float
    rgb: tuple[int, int, int]
    bounces: bool = True  # kept inside the frame; otherwise it moves on straight, out of the frame
    warp: float = 0.0  # its speed swings between (1 - warp) and (1 + warp) times ...
    period: float = 60.0  # ... over this many frames


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _bounce(pos: float, low: float, high: float) -> float:
    """Reflect a coordinate that moved linearly back into [low, high]."""
    span = high - low
    p = (pos - low) % (2 * span)
    return low + (p if p <= span else 2 * span - p)


class Scene:
    """A deterministic moving scene; ``render(i, w, h)`` draws frame ``i``.

    Options that make tracking hard (all off: the scenes the sample model was trained on):

    - ``crossing``: two balls run at each other along one line and cross, one in front of the other;
    - ``occlusion``: a large still box, with a small ball passing behind it, hidden for most of a second
      at 30 frames a second;
    - ``exits``: a kite comes in at the left edge and leaves at the right one;
    - ``speed_changes``: the scene's own things and the kite speed up and slow down;
    - ``own_things``: keep at most this many of the scene's own things (2 to 5), so that the added ones
      do not crowd a frame beyond what the sample model was trained on.
    """

    def __init__(self, seed: int, *, aspect: float = 16 / 9, crossing: bool = False, occlusion: bool = False,
                 exits: bool = False, speed_changes: bool = False, own_things: int | None = None) -> None:
        self.seed = seed
        self.aspect = aspect
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(STUFF_CLASSES))
        n_bands = int(rng.integers(2, 4))
        self._bands = [STUFF_IDS[0] + int(k) for k in order[:n_bands]]
        # Border k separates band k from band k+1: base height, amplitude, spatial freq, phase, drift.
        bases = np.sort(rng.uniform(0.25, 0.8, size=n_bands - 1))
        if n_bands == 3 and bases[1] - bases[0] < 0.2:
            bases[1] = min(bases[0] + 0.2, 0.9)
        self._borders = [
            (float(b), float(rng.uniform(0.02, 0.07)), float(rng.uniform(3, 9)), float(rng.uniform(0, 6.3)),
             float(rng.uniform(-0.05, 0.05)))
            for b in bases
        ]
        self._stuff_rgb = {
            label: _hsv_to_rgb(h + rng.uniform(-0.03, 0.03), s * rng.uniform(0.8, 1.2), v * rng.uniform(0.85, 1.1))
            for label, (h, s, v) in zip(STUFF_IDS, _STUFF_HSV)
        }
        self._things = []
        for _ in range(int(rng.integers(2, 6))):
            label = int(rng.integers(0, len(THING_CLASSES)))
            lo, hi = _THING_HUES[label]
            rgb = _hsv_to_rgb(rng.uniform(lo, hi) / 360.0, rng.uniform(0.7, 1.0), rng.uniform(0.65, 1.0))
            speed = rng.uniform(0.002, 0.008)
            heading = rng.uniform(0, 2 * math.pi)
            self._things.append(
                _Thing(
                    label=label,
                    x=float(rng.uniform(0.1, 0.9)),
                    y=float(rng.uniform(0.15, 0.85)),
                    vx=float(speed * math.cos(heading) / aspect),
                    vy=float(speed * math.sin(heading)),
                    size=float(rng.uniform(0.09, 0.17)),
                    angle=float(rng.uniform(0, 2 * math.pi)),
                    spin=float(rng.uniform(-0.04, 0.04)),
                    rgb=rgb,
                )
            )
        # The hard parts, each from its own draws after the scene's, so the plain scene stays as it was.
        self._things = self._things[:own_things]
        extra = np.random.default_rng(seed + 7)
        if speed_changes:
            self._things = [dataclasses.replace(t, warp=0.8, period=float(extra.uniform(40, 90))) for t in self._things]
        if crossing:
            y, gap, speed = float(extra.uniform(0.6, 0.8)), 0.03, 0.006
            for x, sign, k in ((0.2, 1, 0), (0.8, -1, 1)):
                self._things.append(_Thing(0, x, y + gap * (k - 0.5), sign * speed, 0.0, 0.1, 0.0, 0.0,
                                           _hsv_to_rgb(extra.uniform(-12, 12) / 360, 0.9, 0.85 + 0.1 * k)))
        if occlusion:
            y = float(extra.uniform(0.3, 0.5))
            # The ball first (drawn below), then the box over it: hidden while its centre is within
            # 0.778 * 0.17 - 0.1 of the box's, in heights: 18 frames at 0.002 of the width a frame, from
            # frame 66. Both sizes are within what the sample model was trained on.
            self._things.append(_Thing(0, 0.35, y, 0.002, 0.0, 0.1, 0.0, 0.0, _hsv_to_rgb(0.0, 0.85, 0.9),
                                       bounces=False))
            self._things.append(_Thing(1, 0.5, y, 0.0, 0.0, 0.17, math.pi / 4, 0.0, _hsv_to_rgb(0.33, 0.8, 0.8)))
        if exits:
            self._things.append(_Thing(2, -0.1, float(extra.uniform(0.2, 0.8)), 0.009, 0.0, 0.1, 0.0, 0.02,
                                       _hsv_to_rgb(0.64, 0.85, 0.85), bounces=False,
                                       warp=0.5 if speed_changes else 0.0))

    @property
    def num_things(self) -> int:
        return len(self._things)

    def render(self, index: int, width: int, height: int) -> tuple[np.ndarray, FrameTruth]:
        """Draw frame ``index`` as (H, W, 3) uint8 RGB with its ground truth."""
        rng = np.random.default_rng((self.seed * 1_000_003 + index) % (2**63))
        image = np.empty((height, width, 3), dtype=np.uint8)
        panoptic = np.zeros((height, width), dtype=np.int32)
        segments: dict[int, int] = {}

        xs = np.arange(width, dtype=np.float32) / width
        ys = np.arange(height, dtype=np.float32)[:, None] / height
        band_of_pixel = np.zeros((height, width), dtype=np.int32)
        for base, amp, freq, phase, drift in self._borders:
            border = base + amp * np.sin(freq * xs * 2 * math.pi / 3 + phase + drift * index)
            band_of_pixel += (ys >= border[None, :]).astype(np.int32)
        shade = (1.0 - 0.25 * ys).astype(np.float32)  # vertical light gradient
        for k, label in enumerate(self._bands):
            region = band_of_pixel == k
            if not region.any():
                continue
            seg_id = len(segments) + 1
            segments[seg_id] = label
            panoptic[region] = seg_id
            colour = np.array(self._stuff_rgb[label], dtype=np.float32)
            if label == STUFF_IDS[2]:  # water: moving horizontal ripples
                ripple = 1.0 + 0.12 * np.sin(ys * 90.0 + index * 0.3 + xs[None, :] * 4.0)
            elif label == STUFF_IDS[1]:  # ground: coarse speckle
                ripple = 1.0 + 0.1 * np.sin(xs[None, :] * 60.0) * np.sin(ys * 45.0)
            else:
                ripple = np.ones_like(ys) * np.ones_like(xs)[None, :]
            tone = (colour[None, None, :] * (shade * ripple)[..., None]).clip(0, 255)
            image[region] = tone[region].astype(np.uint8)

        tracks: dict[int, int] = {}
        for identity, thing in enumerate(self._things, start=1):
            mask = np.zeros((height, width), dtype=np.uint8)
            pts = self._outline(thing, index, width, height)
            cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8)
            region = mask.astype(bool)
            if not region.any():
                continue
            seg_id = len(segments) + 1
            segments[seg_id] = thing.label
            tracks[seg_id] = identity
            panoptic[region] = seg_id
            # Flat colour with a soft highlight so shapes are not perfectly flat.
            cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
            dist = np.sqrt((np.arange(width)[None, :] - cx) ** 2 + (np.arange(height)[:, None] - cy) ** 2)
            light = 1.15 - 0.35 * np.clip(dist / (thing.size * height * 1.5), 0, 1)
            tone = (np.array(thing.rgb, dtype=np.float32)[None, None, :] * light[..., None]).clip(0, 255)
            image[region] = tone[region].astype(np.uint8)

        noise = rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
        image = (image.astype(np.float32) + noise).clip(0, 255).astype(np.uint8)
        visible = {seg: lab for seg, lab in segments.items() if (panoptic == seg).any()}
        return image, FrameTruth(panoptic=panoptic, segments=visible,
                                 tracks={seg: tracks[seg] for seg in visible if seg in tracks})

    def _outline(self, thing: _Thing, index: int, width: int, height: int) -> np.ndarray:
        # Time as the thing lives it: its speed times 1 + warp * sin(2 pi index / period).
        t = index + thing.warp * thing.period / (2 * math.pi) * (1 - math.cos(2 * math.pi * index / thing.period))
        x, y = thing.x + thing.vx * t, thing.y + thing.vy * t
        if thing.bounces:
            x, y = _bounce(x, 0.05, 0.95), _bounce(y, 0.1, 0.9)
        x, y = x * width, y * height
        r = thing.size * height
        angle = thing.angle + thing.spin * index
        if thing.label == 0:  # ball: circle
            n, radii = 48, [r] * 48
        elif thing.label == 1:  # box: square
            n, radii = 4, [r * 1.1] * 4
        else:  # kite: elongated diamond
            n, radii = 4, [r * 1.4, r * 0.75, r * 1.4, r * 0.75]
        theta = angle + np.arange(n) * 2 * math.pi / n
        pts = np.stack([x + np.cos(theta) * radii, y + np.sin(theta) * radii], axis=1)
        return np.round(pts).astype(np.int32)


def truth_record(index: int, truth: FrameTruth) -> dict:
    """A frame's ground truth in the ``--save-masks`` JSONL format: panoptic ids, label ids, COCO RLE,
    and each thing's ``track_id``."""
    from .. import rle

    height, width = truth.panoptic.shape
    segments = []
    for seg_id, label in truth.segments.items():
        segment = {"id": seg_id, "label_id": label, "label": LABELS[label], "rle": rle.encode(truth.panoptic == seg_id)}
        if seg_id in truth.tracks:
            segment["track_id"] = truth.tracks[seg_id]
        segments.append(segment)
    return {"frame": index, "width": width, "height": height, "task": "panoptic", "segments": segments}


def write_clip(
    path: str | Path,
    scene: Scene,
    *,
    width: int,
    height: int,
    pts: Sequence[int],
    time_base: Fraction = Fraction(1, 30),
    rate: int = 30,
    frame_step: int = 1,
    distinct: int | None = None,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    audio: np.ndarray | None = None,
    audio_rate: int = 48000,
    on_frame: Callable[[int, FrameTruth], None] | None = None,
    display_rotation: int = 0,
    sample_aspect_ratio: Fraction | None = None,
) -> Path:
    """Encode a scene as a video file, frame ``i`` drawn at scene time ``i * frame_step`` with timestamp ``pts[i]``.

    Args:
        distinct: render only this many frames and repeat them (fast long clips for benchmarks).
        audio: (channels, samples) float32 to add as an AAC track.
        on_frame: receives each frame's ground truth, in order.
        display_rotation: degrees counter-clockwise that players should turn the frames by, as phones
            record portrait video (the scene is drawn as stored, so it shows turned).
        sample_aspect_ratio: a non-square pixel shape to declare (anamorphic video).
    """
    import av  # only needed to write clips

    path = Path(path)
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=rate, options=options or {})
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv444p" if (width % 2 or height % 2) else "yuv420p"
    stream.codec_context.time_base = time_base
    if display_rotation:
        stream.set_display_rotation(display_rotation)
    if sample_aspect_ratio:
        stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
    layout = "mono" if audio is None or audio.shape[0] == 1 else "stereo"
    astream = container.add_stream("aac", rate=audio_rate, layout=layout) if audio is not None else None
    cache: dict[int, np.ndarray] = {}
    for i, p in enumerate(pts):
        key = i % distinct if distinct else i
        if key not in cache:
            image, truth = scene.render(key * frame_step, width, height)
            if distinct:
                cache[key] = image
            if on_frame is not None:
                on_frame(i, truth)
        else:
            image = cache[key]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = p, time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    if astream is not None and audio is not None:
        for start in range(0, audio.shape[1], 1024):
            chunk = np.ascontiguousarray(audio[:, start : start + 1024].astype(np.float32))
            aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            aframe.sample_rate, aframe.pts = audio_rate, start
            for packet in astream.encode(aframe):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return path
