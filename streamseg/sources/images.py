"""Still images as a source: one image, a folder of them, a glob (``'shots/*.jpg'``) or a list file, read
as one job in natural order (``img2`` before ``img10``), so that they are batched together."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fractions import Fraction

import cv2
import numpy as np

from ..containers import IMAGE_SUFFIXES
from ..exceptions import SourceError
from ..types import Frame
from .base import LIST_SUFFIX, Source, SourceContext, files_named, is_glob, is_image, list_file_paths
from .file import VideoInfo

__all__ = ["ImageSource", "image_paths", "natural_key", "read_image"]

def natural_key(path: str) -> list:
    """Sorts ``img2`` before ``img10``, as a file browser does."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def image_paths(spec: str) -> list[str]:
    """The images ``spec`` names, in natural order; a folder's own images only (not its subfolders').

    Raises:
        SourceError: it names no image, or a list file names a file that is missing.
    """
    if spec.lower().endswith(LIST_SUFFIX):
        try:
            listed = list_file_paths(spec)
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise SourceError(f"{spec}: cannot read this list of images ({why})") from None
        missing = next((path for path in listed if not os.path.isfile(path)), None)
        if missing is not None:
            raise SourceError(f"{spec}: lists {missing}, which does not exist")
        return listed  # in the list's order
    if is_image(spec) and not is_glob(spec):
        if not os.path.isfile(spec):
            raise SourceError(f"{spec}: no such file")
        return [spec]
    found = [path for path in files_named(spec) if is_image(path)]
    what = ("a folder with no image in it (for a folder of videos, give -o OUTDIR/)" if os.path.isdir(spec)
            else "a pattern that matches no image")
    if not found:
        raise SourceError(f"{spec}: {what} ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(found, key=natural_key)


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, turned upright as its EXIF orientation says (as phones' photos need); an
    alpha channel is dropped and deeper images are scaled to 8 bits.

    Raises:
        SourceError: the file is not an image OpenCV can read.
    """
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)  # IMREAD_COLOR applies the EXIF orientation
    if bgr is None:
        raise SourceError(f"{path}: not an image that can be read (damaged, or not {', '.join(IMAGE_SUFFIXES)})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageSource(Source):
    """Every image a spec names, as the frames of one source: frame k is the k-th image, at k seconds, its
    path in :attr:`~streamseg.types.Frame.item`. Images of different sizes go in the same batches."""

    live = False

    def __init__(self, spec: str, name: str) -> None:
        self.spec = spec
        self.name = name
        self.paths: list[str] = []
        self._stop = SourceContext().stop

    def open(self, context: SourceContext) -> None:
        self.paths = image_paths(self.spec)
        self._stop = context.stop
        height, width = read_image(self.paths[0]).shape[:2]
        # One image a second, as a video output would show them (the first one's size).
        self.info = VideoInfo(path=self.spec, width=width, height=height, time_base=Fraction(1),
                              average_rate=Fraction(1), frames=len(self.paths), start_time=0, has_audio=False)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            if self._stop.is_set():
                return
            yield Frame(pixels=read_image(path), index=index, pts=index, time_base=Fraction(1), time=float(index),
                        source=self.name, item=path)
