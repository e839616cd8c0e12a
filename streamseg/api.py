"""The one-call Python API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL, load_config
from .exceptions import ConfigError
from .runtime.pipeline import Pipeline
from .types import FrameResult

__all__ = ["segment"]

# The named arguments whose default is a value rather than None: left at it, a dotted override wins.
_DEFAULTS = {"model__name": DEFAULT_MODEL, "model__task": "auto", "model__device": "auto", "model__dtype": "auto"}


def segment(
    source: str | Path | Any,
    *,
    model: str = DEFAULT_MODEL,
    task: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int | None = None,
    threshold: float | None = None,
    mask_threshold: float | None = None,
    overlap_threshold: float | None = None,
    output: str | Path | None = None,
    save_masks: str | Path | None = None,
    annotate: bool = False,
    config: str | Path | None = None,
    **overrides: Any,
) -> Iterator[FrameResult]:
    """Segment a video lazily, yielding one :class:`FrameResult` per frame, in order.

    Frames are decoded, batched and segmented in background threads while you iterate; stopping
    early (``break``) stops the work and closes any output.

    Example:
        >>> for r in streamseg.segment("clip.mp4", model="samples/model"):
        ...     print(r.index, r.time, r.segmentation.labels)

    Args:
        source: a video file, an image, a folder or glob of images, a URL FFmpeg can open; or frames in
            memory: an H x W x 3 uint8 RGB numpy array, a PIL image, a torch tensor, or a list or any
            iterable of them (each item optionally ``(image, seconds)``). A list of paths is several sources.
        model: hub id or local folder of a Mask2Former checkpoint.
        task: auto, semantic, instance or panoptic.
        output: also write the annotated video here.
        save_masks: also write per-frame masks as JSON lines here.
        annotate: draw the masks on every frame, as ``r.annotated`` (an RGB array).
        config: a YAML config to start from; the other arguments override it.
        **overrides: any other config value by dotted name with ``__`` for the dot,
            e.g. ``render__opacity=0.3``.
    """
    paths = isinstance(source, (list, tuple)) and bool(source) and all(isinstance(s, (str, Path)) for s in source)
    in_memory = not paths and not isinstance(source, (str, os.PathLike))  # else a wrong type, named in one line
    named = {
        "sources": () if in_memory else tuple(map(str, source)) if paths else (str(source),),
        "model__name": model if config is None or model != DEFAULT_MODEL else None,
        "model__task": task if config is None or task != "auto" else None,
        "model__device": device,
        "model__dtype": dtype,
        "batching__batch_size": batch_size,
        "postprocess__threshold": threshold,
        "postprocess__mask_threshold": mask_threshold,
        "postprocess__overlap_threshold": overlap_threshold,
        "output__video": str(output) if output else None,
        "output__masks": str(save_masks) if save_masks else None,
    }
    for key in overrides.keys() & named.keys():  # the dotted spelling of an argument named above
        if named[key] not in (None, _DEFAULTS.get(key), overrides[key]):
            raise ConfigError(f"{key.replace('__', '.')}: given twice, as {named[key]!r} and {overrides[key]!r}")
    cfg = load_config(config, **{**named, **overrides})
    with Pipeline(cfg, sources=[source] if in_memory else (), masks_to_host=True, annotate=annotate) as pipeline:
        yield from pipeline.results()
