"""Semi-transparent masks, outlines and class names drawn with tensor ops on the frame's device."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch

from ..ops import lookup
from ..types import Segmentation

__all__ = ["MaskAnnotator", "class_color"]


def class_color(label_id: int) -> tuple[int, int, int]:
    """A fixed, well-spread RGB colour per class id, so a class looks the same in every frame and every run."""
    hue = (label_id * 0.618033988749895 + 0.1) % 1.0
    sat = 0.65 + 0.35 * ((label_id * 7) % 3) / 2
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


class MaskAnnotator:
    """Draws a :class:`Segmentation` over its frame.

    The constructor holds style only; :meth:`annotate` is pure and never syncs with the host.

    Args:
        opacity: weight of the mask colour over the frame.
        outlines: draw each segment's border at full colour.
        labels: write class names at the top-left of each segment's box.
        color_by: ``class`` colours by label id; ``instance`` gives each segment of a frame its own shade.
    """

    def __init__(self, opacity: float = 0.5, outlines: bool = True, labels: bool = True,
                 color_by: str = "class") -> None:
        self.opacity = opacity
        self.outlines = outlines
        self.labels = labels
        self.color_by = color_by
        self._glyphs: dict[tuple[str, int, str], torch.Tensor] = {}

    def annotate(self, scene: torch.Tensor, segmentation: Segmentation) -> torch.Tensor:
        """Return a copy of ``scene`` ((H, W, 3) uint8 RGB) with the segments drawn on it."""
        n = len(segmentation)
        if n == 0:
            return scene.clone()
        device = scene.device
        height = scene.shape[0]
        top = segmentation.index_map().to(device, torch.int32)
        colours = [class_color(lab) for lab in segmentation.label_ids]
        if self.color_by == "instance":
            colours = [_shade(c, i) for i, c in enumerate(colours)]
        # Each pixel is round(scene * keep + paint), keep and paint chosen by an index: 0 for bare
        # pixels, k + 1 inside segment k, n + 1 + k on segment k's outline (drawn at full colour).
        rgb = torch.tensor([(0, 0, 0), *colours], dtype=torch.float32, device=device)
        keep = torch.full((n + 1, 1), 1 - self.opacity, dtype=torch.float32, device=device)
        keep[0] = 1.0
        paint = rgb * self.opacity
        index = top
        if self.outlines:
            edge = torch.zeros(top.shape, dtype=torch.bool, device=device)
            edge[:, :-1] |= top[:, :-1] != top[:, 1:]
            edge[:-1, :] |= top[:-1, :] != top[1:, :]
            thickness = max(1, round(height / 360))
            if thickness > 1:
                edge = _dilate(edge, thickness - 1)
            owner = torch.maximum(top, _shift_max(top))
            index = torch.where(edge & (owner > 0), owner + n + 1, top)
            keep = torch.cat([keep, torch.zeros_like(keep)])
            paint = torch.cat([paint, rgb])
        out = _blend(scene, index, keep, paint)
        if self.labels:
            self._draw_labels(out, segmentation)
        return out

    def _draw_labels(self, out: torch.Tensor, segmentation: Segmentation) -> None:
        height, width = out.shape[:2]
        scale = max(1, round(height / 400))
        for name, box, area in zip(segmentation.labels, segmentation.boxes, segmentation.areas):
            if area == 0:
                continue
            glyph = self._glyph(name, scale, out.device)
            gh, gw = glyph.shape
            x = min(max(box[0], 0), max(width - gw, 0))
            y = min(max(box[1], 0), max(height - gh, 0))
            h, w = min(gh, height - y), min(gw, width - x)
            if h <= 0 or w <= 0:
                continue
            alpha = glyph[:h, :w].unsqueeze(-1)
            region = out[y : y + h, x : x + w].float()
            # Dark box behind white text, so names read on any colour.
            region = region * 0.35 * (1 - alpha) + 255.0 * alpha
            out[y : y + h, x : x + w] = region.round().to(torch.uint8)

    def _glyph(self, text: str, scale: int, device: torch.device) -> torch.Tensor:
        key = (text, scale, str(device))
        if key not in self._glyphs:
            font, thickness = cv2.FONT_HERSHEY_SIMPLEX, scale
            (tw, th), base = cv2.getTextSize(text, font, 0.45 * scale, thickness)
            pad = 2 * scale
            canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), dtype=np.uint8)
            cv2.putText(canvas, text, (pad, pad + th), font, 0.45 * scale, 255, thickness, cv2.LINE_AA)
            self._glyphs[key] = torch.from_numpy(canvas.astype(np.float32) / 255.0).to(device)
        return self._glyphs[key]


def _blend(scene: torch.Tensor, index: torch.Tensor, keep: torch.Tensor, paint: torch.Tensor) -> torch.Tensor:
    """``round(scene * keep[index] + paint[index])`` as uint8, through a table of every (index, channel,
    value) outcome computed with the same float ops: the same bytes as the float formula, with one
    gather per pixel instead of float arithmetic over the frame."""
    values = torch.arange(256, dtype=torch.float32, device=scene.device)
    table = (values.view(1, 1, 256) * keep.view(-1, 1, 1) + paint.view(-1, 3, 1)).round_().clamp_(0, 255)
    table = table.to(torch.uint8).flatten()
    channel = torch.tensor([0, 256, 512], dtype=torch.int32, device=scene.device)
    position = ((index.to(torch.int32) * 768).unsqueeze(-1) + channel).add_(scene)
    return lookup(table, position)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A (2 * radius + 1)-square dilation of an (H, W) bool mask, as two passes of shifted ORs."""
    out = mask.clone()
    for s in range(1, radius + 1):
        out[:, s:] |= mask[:, :-s]
        out[:, :-s] |= mask[:, s:]
    rows = out.clone()
    for s in range(1, radius + 1):
        out[s:, :] |= rows[:-s, :]
        out[:-s, :] |= rows[s:, :]
    return out


def _shift_max(top: torch.Tensor) -> torch.Tensor:
    """Each pixel's largest right or lower neighbour, so an outline between two segments takes the upper one."""
    out = top.clone()
    out[:, :-1] = torch.maximum(out[:, :-1], top[:, 1:])
    out[:-1, :] = torch.maximum(out[:-1, :], top[1:, :])
    return out


def _shade(rgb: tuple[int, int, int], index: int) -> tuple[int, int, int]:
    factor = (0.75, 1.0, 0.55, 0.9)[index % 4]
    return tuple(int(min(255, c * factor)) for c in rgb)  # type: ignore[return-value]
