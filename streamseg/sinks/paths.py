"""Where a run's outputs go: their names for each source, and the checks made before any work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["check_distinct", "output_path", "output_tags", "safe_name", "segments_of"]


def safe_name(source: str) -> str:
    """A source's name as it may stand in a file name or a URL's path."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in source)


def output_path(template: str, source: str, several: bool) -> str:
    """``out.mp4`` for a single source, ``out-<source>.mp4`` for each of several."""
    if not several:
        return template
    path = Path(template)
    return str(path.with_name(f"{path.stem}-{safe_name(source)}{path.suffix}"))


def output_tags(stems: dict[str, str]) -> dict[str, str]:
    """What each source adds to its output files' names, given each name's stem (see
    :func:`~streamseg.sources.base.output_stem`): the stem where that stays unique, else the whole name."""
    counts = {stem: list(stems.values()).count(stem) for stem in stems.values()}
    return {name: stem if counts[stem] == 1 else name for name, stem in stems.items()}


def segments_of(path: str) -> str:
    """How the summary names a segmented output: ``rec-*.mp4``."""
    return str(Path(path).with_name(f"{Path(path).stem}-*{Path(path).suffix}"))


def _file_key(path: str) -> tuple | None:
    """What makes two names one file: the device and inode of a file that exists (a hard link, ``./x`` and
    ``x``, a link to it), else where its name resolves. None for a device (``/dev/null``), which takes any
    number of writers."""
    try:
        found = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def check_distinct(outputs: list[str], inputs: list[str]) -> None:
    """Refuse an output that is an input (writing it would destroy the source) or that another output names
    too (two writers in one file lose half of each).

    Raises:
        ConfigError: naming the two.
    """
    sources = {key: src for src in inputs if (key := _file_key(src)) is not None}
    seen: dict[tuple, str] = {}
    for path in outputs:
        key = _file_key(path)
        if key is None:
            continue
        if key in sources:
            raise ConfigError(f"{path}: is also an input ({sources[key]}); writing it would destroy the source")
        if key in seen:
            raise ConfigError(f"{seen[key]} and {path} are the same file: give each output its own")
        seen[key] = path
