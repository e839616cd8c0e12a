"""Video piped into standard input (source ``-``): from FFmpeg, yt-dlp, curl, a camera's own tool.

A pipe can be read once only. A file is probed, decoded, and reopened for its sound; a piped video is
opened once, and its sound is demuxed beside the frames and queued for each output that copies it. Standard
input that is a file (``< clip.mp4``) is read as that file, which allows everything a file does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import stat
import threading
import time
from collections.abc import Iterator

import av

from ..demuxing import Damage, Timeline, decode, flush, packets
from ..exceptions import SourceError
from ..audio import AudioFeed, put_each
from ..types import Frame
from .base import STDIN, Source, SourceContext, is_fifo, is_piped, is_stdin
from .file import VideoInfo, describe, main_video_stream, stamped
from .pixels import display_rotation

__all__ = ["STDIN", "PipeSource", "PipedVideo", "is_fifo", "is_piped", "is_stdin", "stdin_file"]

_POLL_S = 0.2
# Sound queued for the output: the frames' queues keep decoding within a second or so of the output, and
# the sound's packets with it; this many (20 s of AAC) fill only when no output reads them.
_AUDIO_PACKETS = 1000
_FD = 0  # standard input's file descriptor, whatever Python's sys.stdin was replaced by (a notebook's)
_HINT = "an MP4 must be fragmented to be piped: send MPEG-TS or Matroska"


def stdin_file() -> str | None:
    """The file that standard input reads where it is one (a shell's ``< clip.mp4``), else None."""
    try:
        if not stat.S_ISREG(os.fstat(_FD).st_mode):
            return None
        path = os.readlink(f"/proc/self/fd/{_FD}")
    except OSError:  # no standard input, no /proc (not Linux)
        return None
    return path if os.path.isfile(path) else None


class _Reader:
    """Standard input for FFmpeg, read so that it ends when ``stop`` is set: a writer that stalls
    (a download paused, a tool waiting) must not hold the run open.

    FFmpeg calls :meth:`read` from C, where PyAV drops a Ctrl-C raised inside it: the interrupt is kept
    here instead, reading ends, and :meth:`check` raises it again once FFmpeg has returned.
    """

    def __init__(self, fd: int, stop: threading.Event, *, writer_may_come: bool = False,
                 wait_s: float | None = None) -> None:
        self.fd, self.stop = fd, stop
        self.interrupted = False
        self.started = False  # a first byte came
        # A named pipe opened before its writer reads as ended until one comes: wait for it (for at most
        # ``wait_s``), where standard input's end is its end.
        self.writer_may_come = writer_may_come
        # The run's duration bounds the reading as a whole, also while FFmpeg is still probing the stream
        # (a writer that sent a few frames and holds the pipe open): reading then ends as at the stream's
        # end, and what came is segmented.
        self.give_up_at = None if wait_s is None else time.monotonic() + wait_s

    def read(self, size: int) -> bytes:
        try:
            while not (self.stop.is_set() or self.interrupted or self._waited_enough()):
                ready, _, _ = select.select([self.fd], [], [], _POLL_S)
                if not ready:
                    continue
                try:
                    data = os.read(self.fd, size)
                except BlockingIOError:
                    continue
                if data or self.started or not self.writer_may_come:
                    self.started = self.started or bool(data)
                    return data
                time.sleep(_POLL_S)  # no writer yet
        except KeyboardInterrupt:
            self.interrupted = True
        return b""

    def _waited_enough(self) -> bool:
        return self.give_up_at is not None and time.monotonic() > self.give_up_at

    def check(self) -> None:
        """Raise the Ctrl-C that came while FFmpeg was reading, if one did."""
        if self.interrupted:
            raise KeyboardInterrupt


class PipedVideo:
    """Standard input's video: probed, decoded and its sound demuxed from one container.

    Opening it reads the stream's header; :meth:`probe` decodes up to the first picture and says what a
    file's :func:`~.file.probe` says; :meth:`frames` is the source's generator; :meth:`feed` gives an
    output (the video file, a published stream) the sound. The owner closes it once the frames and the
    sound are no longer read.

    Args:
        stop: set when the run ends: reading then stops, also while waiting for the writer.
        audio: demux the sound for an output to copy (else it is skipped, and not kept).
        path: a named pipe to read instead of standard input.
        wait_s: how long a named pipe may wait for its writer (``--duration``); None: until stopped.

    Raises:
        SourceError: standard input is a terminal, nothing came, it is not a video, or has no video stream.
    """

    def __init__(self, stop: threading.Event, *, audio: bool = True, path: str = STDIN,
                 wait_s: float | None = None) -> None:
        self.path = path
        if is_stdin(path):
            if os.isatty(_FD):
                raise SourceError(f"{STDIN}: standard input is a terminal: pipe a video in (... | streamseg segment -)")
            self._fd = _FD
        else:
            try:  # without O_NONBLOCK, opening waits for a writer where nothing can stop it
                self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                raise SourceError(f"{path}: cannot open: {exc.strerror}") from None
        self._reader = _Reader(self._fd, stop, writer_may_come=not is_stdin(path), wait_s=wait_s)
        try:
            self._container = av.open(self._reader, mode="r")
        except av.FFmpegError as exc:
            self._close_fd()
            self._reader.check()
            if not self._reader.started and self._reader.writer_may_come:
                raise SourceError(f"{path}: nothing came (no writer)") from None
            why = exc.strerror or exc
            raise SourceError(f"{path}: not a video, or one a pipe cannot carry ({why}; {_HINT})") from exc
        if self._reader.interrupted:
            self.close()
            self._reader.check()
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"{path}: has no video stream")
        self.stream = main_video_stream(self._container)
        self._sound = list(self._container.streams.audio) if audio else []
        self.damage = Damage()
        self._packets = packets(self._container, (self.stream, *self._sound), self.damage,
                                Timeline.of(self._container, path))
        self._feeds: list[AudioFeed] = []
        self._unfed: list[av.Packet] | None = []  # sound demuxed by probe(), before the outputs took feeds
        self._early: list[av.VideoFrame] = []
        self._rest: Iterator[av.VideoFrame] = iter(())

    def probe(self, threads: int = 0) -> VideoInfo:
        """Decode the first picture, with ``threads`` decoder threads from now on (0: FFmpeg's choice),
        and describe the video.

        Raises:
            SourceError: the video does not decode.
        """
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads
        self._rest = self._pictures()
        try:
            self._early = [next(self._rest)]
        except StopIteration:
            pass
        except av.FFmpegError as exc:
            self._reader.check()
            raise SourceError(f"{self.path}: cannot decode: {exc.strerror or exc} ({_HINT})") from exc
        self._reader.check()
        if not self._early and self.damage.packets:  # every packet failed: what a pipe cannot carry
            raise SourceError(f"{self.path}: cannot decode: {self.damage.first} ({_HINT})")
        rotation = display_rotation(self._early[0]) if self._early else 0
        return describe(self.path, self._container, self.stream, rotation)

    def feed(self) -> AudioFeed | None:
        """The sound for one more output, or None where there is none; make them before reading frames."""
        if not self._sound:
            return None
        feed = AudioFeed(self._sound, queue.Queue(maxsize=_AUDIO_PACKETS))
        self._feeds.append(feed)
        return feed

    def _pictures(self) -> Iterator[av.VideoFrame]:
        """The video's decoded pictures, in order; the sound's packets go to the feeds on the way."""
        try:
            for packet in self._packets:
                if packet.stream is self.stream:
                    yield from decode(self.stream, packet, self.damage)
                elif packet.dts is not None and self._unfed is not None:
                    self._unfed.append(packet)
                elif packet.dts is not None:
                    put_each(self._feeds, packet)
            yield from flush(self.stream, self.damage)
            self.damage.report(self.path)
        finally:
            put_each(self._feeds, None)

    def frames(self, name: str, *, yuv: bool = False) -> Iterator[Frame]:
        """Every frame, as :func:`~.file.read_frames` gives a file's."""

        def pictures() -> Iterator[av.VideoFrame]:
            for packet in self._unfed or ():
                put_each(self._feeds, packet)
            self._unfed = None
            yield from self._early
            self._early = []
            yield from self._rest

        return stamped(pictures(), self.stream, path=self.path, name=name, yuv=yuv)

    def close(self) -> None:
        """Close the container: call once nothing reads the frames or copies the sound."""
        self._container.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd != _FD:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = _FD


class PipeSource(Source):
    """Standard input or a named pipe, as a source: read once, frames and sound from one container."""

    live = False

    def __init__(self, spec: str, name: str) -> None:
        self.spec = spec
        self.name = name
        self._pipe: PipedVideo | None = None
        self._yuv = False

    def open(self, context: SourceContext) -> None:
        self._yuv = context.yuv
        self._pipe = PipedVideo(context.stop, audio=context.audio, path=STDIN if is_stdin(self.spec) else self.spec,
                                wait_s=context.wait_s)
        self.info = self._pipe.probe(threads=context.threads)

    def frames(self) -> Iterator[Frame]:
        assert self._pipe is not None, "open the source first"
        return self._pipe.frames(self.name, yuv=self._yuv)

    def sound(self) -> AudioFeed | None:
        return self._pipe.feed() if self._pipe is not None else None

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

