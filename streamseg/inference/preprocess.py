"""Mask2Former preprocessing in torch, on the model's device, from uint8 RGB frames.

Matches transformers' ``Mask2FormerImageProcessorPil``: resize (shortest/longest edge, or a fixed
height and width) with the target rounded up to ``size_divisor``, PIL-style antialiased bilinear
resampling rounded back to uint8, rescale, normalize, then zero padding at the bottom and right to
the largest size in the batch. No pixel mask: the model ignores it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..exceptions import ModelError
from ..ops import grouped

__all__ = ["PreprocessSpec", "resized_size", "resize_uint8", "preprocess", "preprocess_batch"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """The parts of a ``preprocessor_config.json`` that change the model's input."""

    do_resize: bool = True
    shortest_edge: int | None = 800
    longest_edge: int | None = 1333
    height: int | None = None
    width: int | None = None
    size_divisor: int = 32
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> PreprocessSpec:
        """Read a preprocessor config as transformers would (``size`` as a dict or an int, ``max_size``)."""
        size = cfg.get("size", {"shortest_edge": 800, "longest_edge": 1333})
        max_size = cfg.get("max_size", cfg.get("_max_size"))
        if isinstance(size, int):  # old configs: "size": 800, "max_size": 1333
            size = {"shortest_edge": size, "longest_edge": max_size or 1333}
        elif isinstance(size, (list, tuple)):
            size = {"height": size[0], "width": size[1]}
        if not isinstance(size, dict):
            raise ModelError(f"preprocessor config: unsupported size {size!r}")
        shortest, longest = size.get("shortest_edge"), size.get("longest_edge")
        height, width = size.get("height"), size.get("width")
        if shortest is None and height is None:
            raise ModelError(f"preprocessor config: size needs shortest_edge or height/width, got {size}")
        if shortest is not None and longest is None:
            longest = max_size
        mean = cfg.get("image_mean", IMAGENET_MEAN)
        std = cfg.get("image_std", IMAGENET_STD)
        return cls(
            do_resize=bool(cfg.get("do_resize", True)),
            shortest_edge=shortest,
            longest_edge=longest,
            height=None if shortest is not None else height,
            width=None if shortest is not None else width,
            size_divisor=int(cfg.get("size_divisor", 32) or 0),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            image_mean=tuple(mean) if isinstance(mean, (list, tuple)) else (mean,) * 3,
            image_std=tuple(std) if isinstance(std, (list, tuple)) else (std,) * 3,
        )


def resized_size(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """The (height, width) a frame is resized to, before padding."""
    if not spec.do_resize:
        return height, width
    if spec.shortest_edge is not None:
        new_h, new_w = _size_with_aspect_ratio(height, width, spec.shortest_edge, spec.longest_edge)
    else:
        new_h, new_w = int(spec.height), int(spec.width)  # type: ignore[arg-type]
    if spec.size_divisor > 0:
        new_h = int(math.ceil(new_h / spec.size_divisor) * spec.size_divisor)
        new_w = int(math.ceil(new_w / spec.size_divisor) * spec.size_divisor)
    return new_h, new_w


def _size_with_aspect_ratio(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    # transformers.image_transforms.get_size_with_aspect_ratio, kept here so its rounding is pinned by tests.
    raw_size = None
    if max_size is not None:
        min_original, max_original = float(min(height, width)), float(max(height, width))
        if max_original / min_original * size > max_size:
            raw_size = max_size * min_original / max_original
            size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        ow = size
        oh = int(raw_size * height / width) if raw_size is not None else int(size * height / width)
    else:
        oh = size
        ow = int(raw_size * width / height) if raw_size is not None else int(size * width / height)
    return oh, ow


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's antialiased bilinear resize of a (B, 3, H, W) uint8 batch, returning uint8.

    On the CPU, torch resizes uint8 with a fixed-point version of PIL's filter; elsewhere it works in
    float, rounded back to uint8. Either way a value is at most one level off PIL's.
    """
    if x.device.type == "cpu":
        return F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                             align_corners=False, antialias=True)
    y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def preprocess(images: list[torch.Tensor], spec: PreprocessSpec, dtype: torch.dtype,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Turn uint8 (H, W, 3) RGB tensors into the model's ``pixel_values``.

    Frames of the same size are resized together. Returns (B, 3, H, W) in ``dtype`` and ``memory_format``
    on the images' device.
    """
    groups = grouped((image.shape[0], image.shape[1]) for image in images)
    if len(groups) == 1:
        return preprocess_batch(torch.stack(images), spec, dtype, memory_format)
    resized: list[torch.Tensor | None] = [None] * len(images)
    for members in groups.values():
        x = _normalized(torch.stack([images[i] for i in members]), spec)
        for j, i in enumerate(members):
            resized[i] = x[j]
    out_h = max(t.shape[1] for t in resized)  # type: ignore[union-attr]
    out_w = max(t.shape[2] for t in resized)  # type: ignore[union-attr]
    batch = torch.zeros((len(images), 3, out_h, out_w), device=images[0].device, dtype=torch.float32)
    for i, t in enumerate(resized):
        batch[i, :, : t.shape[1], : t.shape[2]] = t  # type: ignore[union-attr]
    return batch.to(dtype=dtype, memory_format=memory_format)


def preprocess_batch(images: torch.Tensor, spec: PreprocessSpec, dtype: torch.dtype,
                     memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """:func:`preprocess` for a (B, H, W, 3) uint8 batch of one size: the same ``pixel_values``."""
    return _normalized(images, spec).to(dtype=dtype, memory_format=memory_format)


def _normalized(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """A (B, H, W, 3) uint8 batch resized, rescaled and normalized, as (B, 3, h, w) float32."""
    x = images.permute(0, 3, 1, 2)
    new_size = resized_size(images.shape[1], images.shape[2], spec)
    if new_size != tuple(images.shape[1:3]):
        x = resize_uint8(x, new_size)
    x = x.float()
    if spec.do_rescale:
        x = x * spec.rescale_factor
    if spec.do_normalize:
        x = (x - _per_channel(spec.image_mean, x.device)) / _per_channel(spec.image_std, x.device)
    return x


@functools.lru_cache(maxsize=64)
def _per_channel(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """``values`` as a (1, 3, 1, 1) float32 tensor on ``device``, made once.

    A tensor made from Python numbers on a GPU is copied there from pageable memory, a copy that waits
    for everything queued on the stream: made per batch, it held the infer thread until the previous
    batch's forward pass had finished, so the GPU sat idle while the next batch was being queued.
    """
    with torch.inference_mode(False):  # an ordinary tensor: callers may run with autograd on
        return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1).to(device)
