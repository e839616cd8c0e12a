"""The Source contract, and what a source spec names, decided without network I/O.

A source is one input of a run: a file, a pipe, a webcam, a camera stream, or anything a user writes
that follows :class:`Source`. The pipeline opens every source in :meth:`~streamseg.Pipeline.start`
(so that a missing file fails at once, before a model loads), reads each one's :meth:`Source.frames`
in a producer thread of its own, and closes it once that thread has ended.
"""

from __future__ import annotations

import enum
import glob
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..audio import AudioFeed
from ..containers import IMAGE_SUFFIXES
from ..types import Frame
from ..urls import url_name

if TYPE_CHECKING:
    from .file import VideoInfo

__all__ = ["Kind", "LIVE_SCHEMES", "RunClock", "STDIN", "Source", "SourceContext", "classify", "is_fifo", "is_image",
           "is_image_job", "is_piped", "is_stdin", "is_webcam", "files_named", "list_file_paths", "output_stem",
           "source_names", "thinned"]

STDIN = "-"
_STDIN_NAMES = (STDIN, "pipe:", "pipe:0")
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
_MEDIA_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".ts")
_GLOB = re.compile(r"[*?\[]")
LIST_SUFFIX = ".txt"  # a list file: one image path a line, relative to the list's folder


class Kind(enum.Enum):
    """What a source spec names."""

    FILE = "file"  # a local file, or a URL of a media file (read to its end, every frame kept)
    PIPE = "pipe"  # standard input or a named pipe: read once
    WEBCAM = "webcam"  # an index or a V4L2 device
    STREAM = "stream"  # a camera or a live stream (newest frame kept, reconnected)
    PLAYLIST = "playlist"  # an HLS playlist: a finished recording reads as a file, else as a stream
    IMAGES = "images"  # an image, a folder or a glob of them, or a list file: one job, batched together

    @property
    def live(self) -> bool:
        """Whether frames are kept newest-first; a playlist counts as live until it is opened."""
        return self in (Kind.WEBCAM, Kind.STREAM, Kind.PLAYLIST)

    @property
    def local(self) -> bool:
        """Whether it names a file on this machine (an input an output must not overwrite)."""
        return self in (Kind.FILE, Kind.PIPE, Kind.IMAGES)


def is_stdin(source: str) -> bool:
    """``-`` (or FFmpeg's ``pipe:``, ``pipe:0``): the video comes on standard input."""
    return source in _STDIN_NAMES


def is_fifo(source: str) -> bool:
    """A named pipe (``mkfifo``): read once, as standard input is; its writer may come later."""
    try:
        return stat.S_ISFIFO(os.stat(source).st_mode)
    except (OSError, ValueError):
        return False


def is_piped(source: str) -> bool:
    """Standard input or a named pipe: a video that can be read once only."""
    return is_stdin(source) or is_fifo(source)


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_glob(spec: str) -> bool:
    return bool(_GLOB.search(spec)) and not os.path.exists(spec)


def is_image_job(spec: str) -> bool:
    """An image, a folder, a glob that names no existing file, or a list file (``.txt``)."""
    if "://" in spec:
        return False
    return is_image(spec) or spec.lower().endswith(LIST_SUFFIX) or os.path.isdir(spec) or is_glob(spec)


def list_file_paths(spec: str) -> list[str]:
    """The paths a list file names, one a line (``#`` starts a comment), relative to the list's folder.

    Raises:
        OSError, UnicodeDecodeError: the list cannot be read as UTF-8 text.
    """
    lines = (line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines())
    base = Path(spec).parent
    return [line if os.path.isabs(line) else str(base / line) for line in lines if line and not line.startswith("#")]


def files_named(spec: str) -> list[str]:
    """The files a folder holds (not its subfolders') or a glob matches, in no particular order."""
    if os.path.isdir(spec):
        return [str(p) for p in Path(spec).iterdir() if p.is_file()]
    return [path for path in glob.glob(spec) if os.path.isfile(path)]


def is_webcam(source: str) -> bool:
    """A webcam index (``0``) or a V4L2 device path."""
    return source.isdigit() or source.startswith("/dev/video")


def classify(spec: str) -> Kind:
    """What ``spec`` names, from its spelling (and, for a named pipe, the file's type): never a connection."""
    if is_piped(spec):
        return Kind.PIPE
    if is_webcam(spec):
        return Kind.WEBCAM
    parts = urlsplit(spec)
    scheme = parts.scheme.lower()
    if scheme in LIVE_SCHEMES:
        return Kind.STREAM
    if scheme in ("http", "https"):
        path = parts.path.lower()
        if path.endswith(".m3u8"):
            return Kind.PLAYLIST
        return Kind.FILE if path.endswith(_MEDIA_SUFFIXES) else Kind.STREAM
    return Kind.IMAGES if is_image_job(spec) else Kind.FILE


def source_names(sources: Sequence[str]) -> list[str]:
    """Short unique names for logs, records and output files; never with credentials."""
    names: list[str] = []
    for src in sources:
        if is_stdin(src):
            base = "stdin"
        elif is_webcam(src):
            base = f"webcam{src}" if src.isdigit() else src.rsplit("/", 1)[-1]
        elif "://" in src:
            base = url_name(src)
        elif is_glob(src):
            base = Path(src).parent.name or "images"
        else:
            base = src.rstrip("/").rsplit("/", 1)[-1] or src
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


@dataclass
class RunClock:
    """The ``time.time()`` that live frames and sound are stamped from: set once, as the run's threads
    start (after the model has loaded), so that a camera's first frame is stamped near 0."""

    origin: float = 0.0


@dataclass(frozen=True)
class SourceContext:
    """What the run gives every source when it opens it.

    Attributes:
        stop: set when the run ends: a source stops reading (also while it waits for a writer or a
            connection).
        report: how a live source tells the run of a change of its state (connecting, live, stalled, ...).
        clock: the run's clock, for live timestamps.
        threads: decoder threads (0: FFmpeg's choice; 1 when the model computes on the same CPU cores).
        hwaccel: the CUDA device that decodes with NVDEC, or None.
        yuv: hand on YUV 4:2:0, which the model's device turns into RGB.
        gpu_frames: NVDEC's frames stay on the GPU.
        audio: demux the sound for outputs to copy.
        wait_s: how long a named pipe waits for its writer (the run's duration), None: until stopped.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    report: Callable[..., None] = lambda status: None
    clock: RunClock = field(default_factory=RunClock)
    threads: int = 0
    hwaccel: str | None = None
    yuv: bool = False
    gpu_frames: bool = False
    audio: bool = False
    wait_s: float | None = None


class Source:
    """One input of a run. Subclass it to add a kind of input (see ``docs/architecture.md``).

    Attributes:
        name: short and unique within the run; names its outputs and its records. Never holds credentials.
        live: frames are kept newest-first (a slow model drops the older ones); else every frame is kept
            and the producer waits for room.
        info: what a file's video says of itself (size, rate, time base, sound), once opened; None for a
            live source, whose size is known only from its frames.
    """

    name: str = ""
    live: bool = False
    info: VideoInfo | None = None  # noqa: F821 - a forward reference

    def open(self, context: SourceContext) -> None:
        """Claim the input and learn what it holds; called once, in the caller's thread, before the model
        loads. Raise :class:`~streamseg.SourceError` for an input that cannot be read."""

    def frames(self) -> Iterator[Frame]:
        """The frames, in order, each with its ``source`` set to :attr:`name`; called once, in the source's
        own producer thread. It ends when the input does (or, for a live source, when ``context.stop`` is
        set); an exception fails the run with the source's name."""
        raise NotImplementedError

    def sound(self) -> str | AudioFeed | None:
        """The sound for one more output to copy: a file's path (each output reopens it) or a feed of its
        own (demuxed once by this source); None without sound. Asked before :meth:`frames` starts."""
        return None

    def close(self) -> None:
        """Let go of what :meth:`open` claimed; called once the producer thread has ended, also after a
        failed start."""


def thinned(frames: Iterator[Frame], stride: int = 1, max_fps: float | None = None) -> Iterator[Frame]:
    """Every ``stride``-th of ``frames``, and of those at most ``max_fps`` a second of the source's own time
    (a frame is kept once at least ``1 / max_fps`` has passed since the last one kept). Frames keep their
    numbers and times, so that outputs say where in the source each one is."""
    last: float | None = None
    for position, frame in enumerate(frames):
        if position % stride:
            continue
        if max_fps is not None and last is not None and frame.time - last < 1 / max_fps - 1e-6:
            continue
        last = frame.time
        yield frame


def output_stem(name: str, spec: str) -> str:
    """A source's name as its outputs' file names carry it: a local file's without its extension
    (``out-street.mp4``, not ``out-street.mp4.mp4``)."""
    return Path(name).stem if classify(spec).local and "://" not in spec and Path(name).stem else name
