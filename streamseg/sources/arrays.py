"""Frames a program already holds, as a source: a numpy array, a PIL image, a torch tensor, a list of them,
or any iterable of them (a capture loop of the user's own), each item optionally with its time."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from ..exceptions import SourceError
from ..types import Frame
from .base import Source, SourceContext

__all__ = ["ArraySource", "as_source", "is_in_memory", "to_rgb"]

_WHAT = "an H x W x 3 uint8 RGB image (numpy array, PIL image or torch tensor)"
_MICROSECONDS = Fraction(1, 1_000_000)


def _is_image(item: Any) -> bool:
    kind = type(item)
    return isinstance(item, np.ndarray) or kind.__module__.startswith(("PIL.", "torch"))


def is_in_memory(value: Any) -> bool:
    """Whether ``value`` is an in-memory input (an image, or a collection or iterable of them) rather than
    a path, a URL or a :class:`Source`."""
    if isinstance(value, (str, bytes, Source)) or hasattr(value, "__fspath__"):
        return False
    return _is_image(value) or isinstance(value, Iterable)


def to_rgb(item: Any, where: str) -> np.ndarray:
    """``item`` as an (H, W, 3) uint8 RGB numpy array (a torch tensor's (3, H, W) too, copied to the host).

    Raises:
        SourceError: naming ``where``, the type and the shape found, never the data.
    """
    kind = type(item)
    if kind.__module__.startswith("PIL."):
        item = np.array(item.convert("RGB"))  # a copy: the model's input must be writable
    elif kind.__module__.startswith("torch"):
        if item.ndim == 3 and item.shape[0] == 3 and item.shape[2] != 3:
            item = item.permute(1, 2, 0)
        item = item.detach().cpu().contiguous().numpy() if hasattr(item, "detach") else item
    if not isinstance(item, np.ndarray):
        raise SourceError(f"{where}: a {kind.__module__}.{kind.__qualname__} is not {_WHAT}")
    if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8 or min(item.shape[:2]) < 1:
        raise SourceError(f"{where}: a numpy array of shape {tuple(item.shape)} and dtype {item.dtype} is not {_WHAT}")
    return np.ascontiguousarray(item)


class ArraySource(Source):
    """Frames from memory. ``frames`` is one image, a sequence of them, or any iterable (read once, in the
    source's thread, as it yields); an item may be ``(image, seconds)`` to give its time, else frames are
    timed by their arrival (an iterable) or one a second (a sequence). A source of its own: it is read while
    the model works on earlier frames, and every frame is kept.

    Args:
        frames: what to segment.
        name: the source's name in records and logs.
    """

    live = False

    def __init__(self, frames: Any, name: str = "array") -> None:
        self.name = name
        self._items = [frames] if _is_image(frames) else frames
        self._stop = SourceContext().stop
        if not isinstance(self._items, Iterable):
            kind = type(frames)
            raise SourceError(f"{name}: a {kind.__module__}.{kind.__qualname__} is not {_WHAT}, nor a list of them")

    def open(self, context: SourceContext) -> None:
        self._stop = context.stop

    def frames(self) -> Iterator[Frame]:
        counted = isinstance(self._items, (list, tuple))
        started = time.monotonic()
        for index, item in enumerate(self._items):
            if self._stop.is_set():
                return
            seconds = None
            if isinstance(item, tuple) and len(item) == 2 and not _is_image(item[1]):
                item, seconds = item
            if seconds is None:
                seconds = float(index) if counted else time.monotonic() - started
            pixels = to_rgb(item, f"{self.name}: item {index}")
            yield Frame(pixels=pixels, index=index, pts=round(seconds * 1_000_000), time_base=_MICROSECONDS,
                        time=float(seconds), source=self.name)


def as_source(value: Any, name: str = "array") -> Source:
    """``value`` as a source: itself where it is one, else frames in memory.

    Raises:
        SourceError: it is neither (a path belongs in ``config.sources``), naming its type.
    """
    if isinstance(value, Source):
        return value
    if not is_in_memory(value):
        kind = type(value)
        raise SourceError(f"{name}: a {kind.__module__}.{kind.__qualname__} is not {_WHAT}, a list of them, "
                          "nor a Source")
    return ArraySource(value, name)
