"""Annotated still images: one file for one image in, or one file per image in a folder (``-o OUTDIR/``),
each under its input's own name."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from ..containers import IMAGE_SUFFIXES, names_folder
from ..exceptions import SinkError
from ..types import FrameResult
from .base import Sink

__all__ = ["ImageSink", "is_image_output"]

_QUALITY = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
            ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95]}


def is_image_output(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class ImageSink(Sink):
    """Writes each annotated frame as an image: to ``path`` itself (one image in), or into the folder
    ``path`` under the name of the frame's input (its ``item``: ``shots/a.jpg`` becomes ``OUTDIR/a.jpg``),
    in the input's format. Two inputs of one name (from two folders) get ``-2``, ``-3`` added.

    Raises:
        SinkError: the folder cannot be made, a file cannot be written, or a single image's output is
            given a second frame.
    """

    stage = "encode"
    wants_annotated = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.folder = names_folder(path)
        self.written: list[str] = []
        self._names: set[str] = set()

    def open(self) -> None:
        if self.folder:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot make this folder ({exc.strerror or exc})") from None

    def write(self, result: FrameResult) -> None:
        target = self._target(result)
        image = result.annotated if result.annotated is not None else result.frame.image
        params = _QUALITY.get(Path(target).suffix.lower(), [])
        try:
            ok = cv2.imwrite(target, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        except cv2.error as exc:
            raise SinkError(f"{target}: cannot write ({exc.err})") from None
        if not ok:
            raise SinkError(f"{target}: cannot write")
        self.written.append(target)

    def _target(self, result: FrameResult) -> str:
        if not self.folder:
            if self.written:
                raise SinkError(f"{self.path}: one image out takes one image in; for several, give a folder "
                                "(-o OUTDIR/)")
            return self.path
        item = result.frame.item or f"{result.source}-{result.frame.index:06d}.png"
        stem, suffix = Path(item).stem, Path(item).suffix.lower()
        suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"
        name, n = f"{stem}{suffix}", 2
        while name in self._names:
            name, n = f"{stem}-{n}{suffix}", n + 1
        self._names.add(name)
        return os.path.join(self.path, name)
