"""Semi-transparent masks, outlines and class names drawn with tensor ops on the frame's device."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..ops import MOST_PIXELS, batch_chunks, grouped, lookup, stacked, upload_each
from ..types import Segmentation

__all__ = ["MaskAnnotator", "class_color", "track_color"]


def class_color(label_id: int) -> tuple[int, int, int]:
    """A fixed, well-spread RGB colour per class id, so a class looks the same in every frame and every run."""
    hue = (label_id * 0.618033988749895 + 0.1) % 1.0
    sat = 0.65 + 0.35 * ((label_id * 7) % 3) / 2
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A fixed, saturated RGB colour per track id: a track looks the same for its whole life, and tracks
    numbered close together look far apart."""
    hue = (track_id * 0.618033988749895 + 0.45) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8 + 0.2 * (track_id % 2), 0.95 - 0.2 * ((track_id // 2) % 2))
    return int(r * 255), int(g * 255), int(b * 255)


class MaskAnnotator:
    """Draws a :class:`Segmentation` over its frame.

    The constructor holds style only; drawing is pure and never syncs with the host.

    Args:
        opacity: weight of the mask colour over the frame.
        outlines: draw each segment's border at full colour.
        labels: write class names at the top-left of each segment's box, with the track id where it has one
            (``ball 3``).
        color_by: ``class`` colours by label id; ``instance`` gives each segment of a frame its own shade;
            ``track`` colours each tracked segment by its track id, the others by class.
        scores: add each segment's score to its label (``ball 0.93``), where it has one.
        boxes: draw each segment's bounding box in its colour.
        line_width: outlines' and boxes' width in pixels; None: 1 per 360 rows of the frame.
    """

    def __init__(self, opacity: float = 0.5, outlines: bool = True, labels: bool = True,
                 color_by: str = "class", *, scores: bool = False, boxes: bool = False,
                 line_width: int | None = None) -> None:
        self.opacity = opacity
        self.outlines = outlines
        self.labels = labels
        self.color_by = color_by
        self.scores = scores
        self.boxes = boxes
        self.line_width = line_width
        self._canvases: dict[tuple[str, int], np.ndarray] = {}
        self._glyphs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def annotate(self, scene: torch.Tensor, segmentation: Segmentation) -> torch.Tensor:
        """Return a copy of ``scene`` ((H, W, 3) uint8 RGB) with the segments drawn on it."""
        return self.annotate_batch([scene], [segmentation])[0]

    def annotate_batch(
        self, scenes: Sequence[torch.Tensor], segmentations: Sequence[Segmentation],
    ) -> list[torch.Tensor]:
        """:meth:`annotate` for each frame of a batch. On a GPU frames of one size are drawn together,
        so a batch costs the launches of one frame (see :func:`~streamseg.ops.batch_chunks`)."""
        out = list(scenes)
        for (shape, device), members in grouped((tuple(scene.shape), scene.device) for scene in scenes).items():
            pixels = shape[0] * shape[1]
            for chunk in batch_chunks(members, device, [pixels] * len(members), MOST_PIXELS):
                drawn = self._draw([scenes[i] for i in chunk], [segmentations[i] for i in chunk])
                for i, image in zip(chunk, drawn):
                    out[i] = image
        return out

    def _draw(self, scenes: list[torch.Tensor], segmentations: list[Segmentation]) -> list[torch.Tensor]:
        """Frames of one size, drawn as one (B, H, W, 3) stack."""
        if not any(len(seg) for seg in segmentations):
            return list(torch.stack(scenes))  # a copy, made in one op
        device = scenes[0].device
        height, width = scenes[0].shape[:2]
        stack = stacked(scenes)
        top = stacked([seg.index_map().to(device, torch.int32) if len(seg)
                        else torch.zeros((height, width), dtype=torch.int32, device=device) for seg in segmentations])
        keep, paint, first_row, outline_row = self._tables(segmentations, device)
        # Each pixel is round(scene * keep + paint), keep and paint chosen by an index into the batch's
        # table: frame f's rows start at first_row[f]; then 0 for bare pixels, k + 1 inside segment k,
        # n + 1 + k on segment k's outline (drawn at full colour).
        index = top
        if self.outlines:
            # Borders are found on a one-byte copy of the map where every frame has under 256 segments:
            # a quarter of the memory to go through.
            keys = top.to(torch.uint8) if max(len(seg) for seg in segmentations) < 256 else top
            edge = torch.zeros(top.shape, dtype=torch.bool, device=device)
            edge[..., :, :-1] |= keys[..., :, :-1] != keys[..., :, 1:]
            edge[..., :-1, :] |= keys[..., :-1, :] != keys[..., 1:, :]
            thickness = self._width(height)
            if thickness > 1:
                edge = _dilate(edge, thickness - 1)
            owner = _shift_max(keys).to(torch.int32)
            index = torch.where(edge & (owner > 0), owner + outline_row, top)
        if len(scenes) > 1:
            index = index + first_row
        out = _blend(stack, index, keep, paint)
        if self.boxes:
            self._draw_boxes(out, segmentations)
        if self.labels:
            self._draw_labels(out, segmentations)
        return list(out)

    def _width(self, height: int) -> int:
        return self.line_width or max(1, round(height / 360))

    def _colours(self, seg: Segmentation) -> list[tuple[int, int, int]]:
        colours = [class_color(lab) for lab in seg.label_ids]
        if self.color_by == "track" and seg.track_ids is not None:
            return [c if t is None else track_color(t) for c, t in zip(colours, seg.track_ids)]
        return [_shade(c, i) for i, c in enumerate(colours)] if self.color_by == "instance" else colours

    def _draw_boxes(self, out: torch.Tensor, segmentations: list[Segmentation]) -> None:
        """Each segment's box, its four sides ``line_width`` wide in the segment's colour, inside the box."""
        height, width = out.shape[1:3]
        t = self._width(height)
        for f, seg in enumerate(segmentations):
            for (x, y, w, h), colour, area in zip(seg.boxes, self._colours(seg), seg.areas):
                if area == 0:
                    continue
                x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
                paint = torch.tensor(colour, dtype=torch.uint8, device=out.device)
                sides = ((slice(y0, min(y0 + t, y1)), slice(x0, x1)), (slice(max(y1 - t, y0), y1), slice(x0, x1)),
                         (slice(y0, y1), slice(x0, min(x0 + t, x1))), (slice(y0, y1), slice(max(x1 - t, x0), x1)))
                for rows, cols in sides:
                    out[f, rows, cols] = paint

    def _tables(self, segmentations: list[Segmentation], device: torch.device) -> tuple:
        """The batch's keep (T, 1) and paint (T, 3) rows, built on the host and copied in one transfer;
        and, as (B, 1, 1) tensors (or ints for one frame), where each frame's rows and outline rows start."""
        keeps, paints, first_rows, outline_rows = [], [], [], []
        for seg in segmentations:
            n = len(seg)
            rgb = np.array([(0, 0, 0), *self._colours(seg)], dtype=np.float32)
            keep = np.full(n + 1, 1 - self.opacity, dtype=np.float32)
            keep[0] = 1.0
            paint = rgb * np.float32(self.opacity)
            if self.outlines:
                keep, paint = np.concatenate([keep, np.zeros_like(keep)]), np.concatenate([paint, rgb])
            first_rows.append(sum(len(k) for k in keeps))
            outline_rows.append(n + 1)
            keeps.append(keep)
            paints.append(paint)
        rows = sum(len(k) for k in keeps)
        floats = torch.from_numpy(np.concatenate([*keeps, np.concatenate(paints).ravel()]))
        keep_d, paint_d = upload_each([floats], device)[0].split([rows, 3 * rows])
        if len(segmentations) == 1:
            return keep_d.view(-1, 1), paint_d.view(-1, 3), 0, outline_rows[0]
        ints = upload_each([torch.tensor(first_rows + outline_rows, dtype=torch.int32)], device)[0]
        first_d, outline_d = ints.view(2, -1, 1, 1)
        return keep_d.view(-1, 1), paint_d.view(-1, 3), first_d, outline_d

    def _draw_labels(self, out: torch.Tensor, segmentations: list[Segmentation]) -> None:
        """Class names on dark boxes at the top-left of each segment's box, later labels over earlier ones.

        Labels are drawn in layers: a label goes one layer above every earlier label of its frame that it
        overlaps, so no two labels of a layer share a pixel and each layer is one gather and one scatter
        for the whole batch, with the same bytes as drawing the labels one by one.
        """
        height, width = out.shape[1:3]
        scale = max(1, round(height / 400))
        layers: list[list[tuple[tuple, int]]] = []  # per layer: (glyph key, flat index of its top-left pixel)
        for f, seg in enumerate(segmentations):
            placed: list[tuple[int, int, int, int, int]] = []  # x, y, w, h, layer
            track_ids = seg.track_ids or [None] * len(seg)
            for name, box, area, score, track_id in zip(seg.labels, seg.boxes, seg.areas, seg.scores, track_ids):
                if area == 0:
                    continue
                if track_id is not None:
                    name = f"{name} {track_id}"
                if self.scores and score is not None and score == score:  # NaN: no score to show
                    name = f"{name} {score:.2f}"
                gh, gw = self._canvas(name, scale).shape
                x = min(max(box[0], 0), max(width - gw, 0))
                y = min(max(box[1], 0), max(height - gh, 0))
                h, w = min(gh, height - y), min(gw, width - x)
                if h <= 0 or w <= 0:
                    continue
                layer = 1 + max((lay for px, py, pw, ph, lay in placed
                                 if px < x + w and x < px + pw and py < y + h and y < py + ph), default=-1)
                placed.append((x, y, w, h, layer))
                if layer == len(layers):
                    layers.append([])
                layers[layer].append(((name, scale, h, w), (f * height + y) * width + x))
        flat = out.view(-1, 3)
        for layer in layers:
            position, alpha = self._layer_pixels(layer, width, out.device)
            region = flat.index_select(0, position).float()
            # Dark box behind white text, so names read on any colour.
            region = region * 0.35 * (1 - alpha) + 255.0 * alpha
            flat.index_copy_(0, position, region.round().to(torch.uint8))

    def _layer_pixels(self, layer: list[tuple[tuple, int]], width: int, device: torch.device) -> tuple:
        """Flat pixel indices of a layer's labels, and each pixel's glyph alpha as (P, 1)."""
        glyphs = [self._glyph(key, width, device) for key, _ in layer]
        if len(layer) == 1:
            return glyphs[0][0] + layer[0][1], glyphs[0][1]
        offsets = [g[0] for g in glyphs]
        sizes = [len(o) for o in offsets]
        starts_d, sizes_d = upload_each([torch.tensor([start for _, start in layer]), torch.tensor(sizes)], device)
        starts = torch.repeat_interleave(starts_d, sizes_d, output_size=sum(sizes))
        return torch.cat(offsets) + starts, torch.cat([g[1] for g in glyphs])

    def _glyph(self, key: tuple, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A name's glyph cropped to (h, w), on ``device``: flat pixel offsets from its top-left pixel in
        a frame ``width`` wide (int64), and alpha as (P, 1) float32."""
        name, scale, h, w = key
        full = (*key, width, str(device))
        if full not in self._glyphs:
            canvas = self._canvas(name, scale)[:h, :w]
            rows, cols = np.mgrid[:h, :w]
            offsets = torch.from_numpy((rows * width + cols).ravel().astype(np.int64)).to(device)
            alpha = torch.from_numpy(np.ascontiguousarray(canvas).reshape(-1, 1)).to(device)
            self._glyphs[full] = (offsets, alpha)
        return self._glyphs[full]

    def _canvas(self, text: str, scale: int) -> np.ndarray:
        """The name as white-on-black float32 alpha, padded, drawn once by OpenCV."""
        key = (text, scale)
        if key not in self._canvases:
            font, thickness = cv2.FONT_HERSHEY_SIMPLEX, scale
            (tw, th), base = cv2.getTextSize(text, font, 0.45 * scale, thickness)
            pad = 2 * scale
            canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), dtype=np.uint8)
            cv2.putText(canvas, text, (pad, pad + th), font, 0.45 * scale, 255, thickness, cv2.LINE_AA)
            self._canvases[key] = canvas.astype(np.float32) / 255.0
        return self._canvases[key]


def _blend(scene: torch.Tensor, index: torch.Tensor, keep: torch.Tensor, paint: torch.Tensor) -> torch.Tensor:
    """``round(scene * keep[index] + paint[index])`` as uint8, through a table of every (index, channel,
    value) outcome computed with the same float ops: the same bytes as the float formula, with gathers
    instead of float arithmetic over the frame."""
    values = torch.arange(256, dtype=torch.float32, device=scene.device)
    table = (values.view(1, 1, 256) * keep.view(-1, 1, 1) + paint.view(-1, 3, 1)).round_().clamp_(0, 255)
    table = table.to(torch.uint8).flatten()
    # Where each row's outcomes start, per channel: row t's channel c at (3t + c) * 256. Gathered per pixel
    # as rows of three: on a CPU, twice as fast as broadcasting a per-pixel offset over the channels.
    starts = (torch.arange(3 * len(keep), dtype=torch.int32, device=scene.device) * 256).view(-1, 3)
    position = lookup(starts, index.to(torch.int32))
    return lookup(table, position.add_(scene))


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A (2 * radius + 1)-square dilation of (..., H, W) bool masks, as two passes of shifted ORs."""
    out = mask.clone()
    for s in range(1, radius + 1):
        out[..., :, s:] |= mask[..., :, :-s]
        out[..., :, :-s] |= mask[..., :, s:]
    rows = out.clone()
    for s in range(1, radius + 1):
        out[..., s:, :] |= rows[..., :-s, :]
        out[..., :-s, :] |= rows[..., s:, :]
    return out


def _shift_max(top: torch.Tensor) -> torch.Tensor:
    """The largest of each pixel and its right and lower neighbours, so an outline between two segments
    takes the upper one."""
    out = top.clone()
    left, upper = out[..., :, :-1], out[..., :-1, :]
    torch.maximum(left, top[..., :, 1:], out=left)  # in place: no temporary the size of the map
    torch.maximum(upper, top[..., 1:, :], out=upper)
    return out


def _shade(rgb: tuple[int, int, int], index: int) -> tuple[int, int, int]:
    factor = (0.75, 1.0, 0.55, 0.9)[index % 4]
    return tuple(int(min(255, c * factor)) for c in rgb)  # type: ignore[return-value]
