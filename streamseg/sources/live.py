"""Live sources: camera streams (RTSP, RTMP, HTTP MJPEG/HLS, anything FFmpeg opens) and webcams.

A live source runs until it is stopped. It reconnects by itself, with capped exponential backoff
and jitter, whenever the connection fails, ends or stalls (no frame within ``stall_s``), and reports
each change of state (connecting, live, stalled, reconnecting, ended, failed). Only refused
credentials fail for good: retrying cannot fix them. Frames carry wall-clock time, and URLs are
never printed with their credentials.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..config import LiveConfig
from ..exceptions import SourceError
from ..audio import AudioFeed, put_each
from ..types import Frame
from ..retry import Backoff
from ..urls import redact
from .base import LIVE_SCHEMES, Kind, Source, SourceContext, is_webcam
from .base import classify as classify_spec
from .file import main_video_stream
from .hardware import hardware_decoder
from .pixels import frame_pixels

__all__ = [
    "LIVE_SCHEMES",
    "STATES",
    "LiveSource",
    "Backoff",
    "SourceStatus",
    "is_live",
    "is_webcam",
    "redact",
    "classify",
    "read_live",
    "read_stream",
    "read_webcam",
]

log = logging.getLogger(__name__)

STATES = ("connecting", "live", "stalled", "reconnecting", "ended", "failed")
LIVE_TIME_BASE = Fraction(1, 1000)  # live frames are stamped in milliseconds of wall-clock time


TROUBLE = ("stalled", "reconnecting", "failed")  # the states of a live source that gives no frames


@dataclass(frozen=True)
class SourceStatus:
    """A change of a source's state, with why (never with credentials): ``reason`` is the trouble itself,
    ``detail`` what is done about it."""

    source: str
    state: str
    detail: str = ""
    at: float = 0.0
    reason: str = ""


def is_live(source: str) -> bool:
    """Webcams (an index or /dev/video*) and streaming URLs are live; files are not.

    HTTP(S) URLs count as live unless they name a media file or an HLS playlist of a finished
    recording (video on demand), which keeps every frame like a file: a playlist is asked (up to 10 s).
    """
    kind = classify_spec(source)
    return not _is_video_on_demand(source) if kind is Kind.PLAYLIST else kind.live


def _is_video_on_demand(url: str, timeout_s: float = 10.0) -> bool:
    """An HLS playlist with an end (a finished recording) declares its duration; a live one does not."""
    try:
        with av.open(url, timeout=timeout_s) as container:
            return bool(container.duration)
    except (av.FFmpegError, OSError):
        return False  # unreachable now: treat as live, so it is retried rather than failing at once


# Failures of the connection itself, which opening the stream without hardware decoding cannot fix.
CONNECTION_ERRORS = (
    av.error.HTTPError, av.error.HTTPClientError, av.error.ConnectionRefusedError, av.error.ConnectionResetError,
    av.error.ConnectionAbortedError, av.error.TimeoutError, av.error.ExitError, av.error.EOFError,
)


def classify(exc: BaseException) -> tuple[str, bool]:
    """A short reason for a connection failure, and whether retrying is pointless."""
    if isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
        return "refused credentials", True
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "not found", False
    if isinstance(exc, (av.error.ConnectionRefusedError, av.error.ConnectionResetError)):
        return "unreachable (connection refused)", False
    if isinstance(exc, (av.error.TimeoutError, av.error.ExitError)):
        return "unreachable (timed out)", False
    if isinstance(exc, av.error.InvalidDataError):
        return "bad stream (invalid data)", False
    if isinstance(exc, av.error.EOFError):
        return "stream ended", False
    if isinstance(exc, OSError) and getattr(exc, "errno", None) is not None:
        return f"unreachable ({exc.strerror})", False
    text = getattr(exc, "strerror", None) or str(exc)
    if re.search(r"\b401\b|unauthori[sz]ed", text, re.I):
        return "refused credentials", True
    if re.search(r"\b404\b|not found", text, re.I):
        return "not found", False
    return text.split(":")[0][:80] or type(exc).__name__, False


# pixels, pixel format, colour matrix (see Frame); and, from a camera with sound, the frame's time (below)
Pixels = tuple[np.ndarray, str, str] | tuple[np.ndarray, str, str, float | None]
Connect = Callable[[], Iterator[Pixels]]


def read_live(
    connect: Connect,
    *,
    name: str,
    stop: threading.Event,
    report: Callable[[SourceStatus], None],
    backoff: Backoff = Backoff(),
    origin: float | None = None,
) -> Iterator[Frame]:
    """Yield frames from ``connect()``, reconnecting until ``stop`` is set.

    ``connect`` opens the source and returns an iterator of frames' pixels; it raises when the
    connection fails and its iterator raises (or ends) when the connection drops or stalls. Frames are
    stamped in milliseconds since ``origin`` (``time.time()``; now, if None): when they are handed on,
    or, where the iterator gives a fourth item that is not None, at that many seconds since ``origin``
    (a camera's frames placed on its sound's clock: see :class:`LiveAudio`).

    Raises:
        SourceError: credentials were refused (the only failure that retrying cannot fix).
    """
    rng = random.Random()
    index, failures, state = 0, 0, ""
    origin = time.time() if origin is None else origin

    def set_state(new: str, detail: str = "", reason: str = "") -> None:
        nonlocal state
        if new != state or detail:
            state = new
            report(SourceStatus(name, new, detail, time.time(), reason or detail))

    set_state("connecting")
    while not stop.is_set():
        reason = ""
        try:
            frames = connect()
            for pixels, pixel_format, matrix, *placed in frames:
                if stop.is_set():
                    break
                if state != "live":
                    set_state("live")
                    failures = 0
                now = time.time() if not placed or placed[0] is None else origin + placed[0]
                yield Frame(pixels=pixels, index=index, pts=int((now - origin) * 1000), time_base=LIVE_TIME_BASE,
                            time=now, source=name, captured=time.monotonic(), pixel_format=pixel_format,
                            matrix=matrix)
                index += 1
            else:
                reason = "stream ended"
        except (av.FFmpegError, OSError, SourceError) as exc:
            reason, permanent = classify(exc)
            if permanent:
                set_state("failed", reason)
                raise SourceError(f"{name}: {reason}") from None
        if stop.is_set():
            break
        failures += 1
        delay = backoff.delay(failures, rng)
        if state == "live" and "timed out" in reason:
            set_state("stalled", "no frame within the stall timeout")
        set_state("reconnecting", f"{reason}; retrying in {delay:.1f} s", reason)
        stop.wait(delay)
    set_state("ended")


def read_stream(url: str, *, transport: str = "tcp", stall_s: float = 5.0, open_s: float = 10.0,
                hwaccel: str | None = None, yuv: bool = False, audio: LiveAudio | None = None) -> Connect:
    """A ``connect`` for URLs FFmpeg opens (RTSP over TCP by default, or UDP).

    ``hwaccel``: "cuda" or "cuda:N" decodes with NVDEC where the device allows. If a stream then fails
    to open for a reason that is not about the connection, it is opened again at once on the CPU, and
    stays there. ``yuv``: hand on the decoder's YUV 4:2:0 where a GPU can convert it. ``audio``: where
    the stream's sound goes, if anywhere.
    """
    accel = hardware_decoder(hwaccel)
    # Not fflags=nobuffer: it drops the packets read while FFmpeg probes the stream, the first keyframe
    # among them, and the frames up to the next one decode as garbage (the model would segment them).
    # Latency stays bounded without it: a live source hands on only its newest frame.
    options = {"flags": "low_delay"}
    if url.lower().startswith("rtsp"):
        options["rtsp_transport"] = transport

    def connect() -> Iterator[Pixels]:
        nonlocal accel
        if accel is not None:
            try:
                return _decode(av.open(url, options=options, timeout=(open_s, stall_s), hwaccel=accel), yuv, audio)
            except av.FFmpegError as exc:
                if isinstance(exc, CONNECTION_ERRORS):
                    raise
                log.info("%s: hardware decoding unavailable (%s); decoding on the CPU", redact(url), classify(exc)[0])
                accel = None
        return _decode(av.open(url, options=options, timeout=(open_s, stall_s)), yuv, audio)

    return connect


def _decode(container: av.container.InputContainer, yuv: bool, audio: LiveAudio | None) -> Iterator[Pixels]:
    try:
        if not container.streams.video:
            raise SourceError("has no video stream")
        stream = main_video_stream(container)
        sound = container.streams.audio[0] if audio is not None and container.streams.audio else None
        if audio is not None:
            audio.connected(sound)
        for packet in container.demux(stream, *([sound] if sound is not None else [])):
            if packet.stream is stream:
                for decoded in packet.decode():
                    placed = None
                    if audio is not None and decoded.time is not None:
                        placed = audio.anchor(decoded.time)
                    yield (*frame_pixels(decoded, yuv), placed)
            elif audio is not None and packet.dts is not None:
                audio.offer(packet)
    finally:
        container.close()


class LiveAudio:
    """A camera's sound, for its recording: packets copied as they come, stamped on the run's clock
    like the frames (milliseconds since ``origin``), through reconnections.

    Each output that copies the sound takes a :meth:`feed` of its own. A connection's sound is placed by
    its frames: the run-clock time a frame is decoded at, less its stream time, gives the connection's
    offset; the smallest such offset is the one with the least delay, and it follows the camera's clock
    drifting by a millisecond a frame at most (a jump of the camera's clock by over a second starts it
    anew). The frames of a connection with sound are placed by the same offset (:meth:`anchor`), not
    by when they were decoded: a source thread that falls behind (a busy machine) would otherwise stamp
    its pictures later than the sound that came with them, and the recording would play them apart by
    as much (seconds, on a loaded machine). Sound before a connection's first frame is left out.
    Sound whose codec, rate or channels differ from the first connection's (the camera reconfigured) is
    left out, with a warning: one file holds one kind.

    Args:
        origin: ``time.time()`` that frames count from (see :func:`read_live`).
        name: the source, for messages.
    """

    def __init__(self, origin: float, name: str, *, queue_size: int = 1000) -> None:
        self.origin = origin
        self.name = name
        self.queue_size = queue_size
        self._streams: list[av.AudioStream] = []  # the template, shared by every feed
        self._feeds: list[AudioFeed] = []
        self._holder: av.container.OutputContainer | None = None  # owns the template (a copy)
        self._kind: tuple | None = None
        self._usable = False
        self._offset: float | None = None
        self._last_frame: float | None = None  # the stream time of this connection's last frame
        self._last_pts: int | None = None

    def connected(self, stream: av.AudioStream | None) -> None:
        """A new connection, whose sound is ``stream`` (None: it has none)."""
        self._offset = self._last_frame = None
        self._usable = False
        if stream is None:
            return
        context = stream.codec_context
        kind = (context.name, context.sample_rate, context.channels)
        if self._kind is None:
            # A copy of the stream's parameters that outlives this connection, for outputs opened later.
            self._holder = av.open(io.BytesIO(), "w", format="matroska")
            self._streams.append(self._holder.add_stream_from_template(stream))
            self._kind = kind
        elif kind != self._kind:
            log.warning("%s: the sound changed from %s to %s; recording without it", self.name, self._kind, kind)
            return
        self._usable = True

    def feed(self) -> AudioFeed:
        """The sound for one more output (a recording, a published stream); make them before it connects."""
        feed = AudioFeed(self._streams, queue.Queue(maxsize=self.queue_size))
        self._feeds.append(feed)
        return feed

    def anchor(self, frame_time: float) -> float | None:
        """A frame of stream time ``frame_time`` (seconds) was decoded now: its time on the run's clock
        (seconds since ``origin``), the sound's, where this connection's sound is recorded; else None."""
        offset = time.time() - self.origin - frame_time
        last, self._last_frame = self._last_frame, frame_time
        # The camera's clock jumped (its frames' times went back, or on by more than a second): start anew.
        # Frames decoded late, however late, are no jump: their own times still step as the camera's do.
        jumped = last is not None and not 0 <= frame_time - last <= 1.0
        if self._offset is None or (jumped and abs(offset - self._offset) > 1.0):
            self._offset = offset
        else:
            self._offset = min(offset, self._offset + 0.001)
        return frame_time + self._offset if self._usable else None

    def offer(self, packet: av.Packet) -> None:
        """A packet of this connection's sound: stamped on the run's clock and queued, or left out."""
        if not self._usable or self._offset is None or packet.pts is None or not packet.time_base:
            return
        pts = round((float(packet.pts * packet.time_base) + self._offset) / packet.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            return  # overlaps what is queued (a reconnection, the offset moved back): left out
        packet.dts = packet.pts = self._last_pts = pts
        packet.stream = self._streams[0]
        put_each(self._feeds, packet)

    def close(self) -> None:
        """Close the template's holder: call once no output reads the sound."""
        if self._holder is not None:
            self._holder.close()
            self._holder = None


def read_webcam(device: str, *, stall_s: float = 5.0) -> Connect:
    """A ``connect`` for a webcam index (``0``) or device path, through OpenCV."""

    def connect() -> Iterator[Pixels]:
        import cv2

        path = f"/dev/video{device}" if device.isdigit() else device
        if sys.platform.startswith("linux") and not os.path.exists(path):  # unplugged: say so, ask no backend
            raise SourceError(f"cannot open webcam {device} (no {path})")
        # OpenCV's backends each print a warning block for a camera that does not open, on every retry;
        # silenced while opening, since the reconnect log says it once, in one line.
        opencv_log = cv2.utils.logging
        level = opencv_log.getLogLevel()
        opencv_log.setLogLevel(opencv_log.LOG_LEVEL_SILENT)
        try:
            capture = cv2.VideoCapture(int(device) if device.isdigit() else device)
        finally:
            opencv_log.setLogLevel(level)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open webcam {device}")
        return _capture(capture, stall_s)

    return connect


def _capture(capture, stall_s: float) -> Iterator[Pixels]:
    import cv2

    try:
        last = time.monotonic()
        while True:
            ok, bgr = capture.read()
            if not ok:
                if time.monotonic() - last > stall_s:
                    raise SourceError("webcam stopped delivering frames")
                time.sleep(0.01)
                continue
            last = time.monotonic()
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "rgb24", "bt601"
    finally:
        capture.release()


class LiveSource(Source):
    """A camera stream or a webcam, as a source: connected in its producer thread, reconnected with backoff
    whenever the connection fails, ends or stalls, until the run stops (see :func:`read_live`).

    Args:
        spec: the URL, webcam index or device.
        name: the source's name in the run.
        settings: the run's ``live`` settings (transport, timeouts, backoff).
    """

    live = True

    def __init__(self, spec: str, name: str, settings: LiveConfig) -> None:
        self.spec = spec
        self.name = name
        self.settings = settings
        self._context = SourceContext()
        self._audio: LiveAudio | None = None

    def open(self, context: SourceContext) -> None:
        self._context = context
        if context.audio and not is_webcam(self.spec):
            self._audio = LiveAudio(context.clock.origin, self.name)
        log.info("%s: %s", self.name, redact(self.spec))

    def frames(self) -> Iterator[Frame]:
        ctx, live = self._context, self.settings
        if is_webcam(self.spec):
            connect = read_webcam(self.spec, stall_s=live.stall_timeout_s)
        else:
            connect = read_stream(self.spec, transport=live.transport, stall_s=live.stall_timeout_s,
                                  open_s=live.open_timeout_s, hwaccel=ctx.hwaccel, yuv=ctx.yuv, audio=self._audio)
        if self._audio is not None:
            self._audio.origin = ctx.clock.origin  # the clock starts after the source was opened
        backoff = Backoff(initial=live.reconnect_initial_s, cap=live.reconnect_max_s)
        return read_live(connect, name=self.name, stop=ctx.stop, report=ctx.report, backoff=backoff,
                         origin=ctx.clock.origin)

    def sound(self) -> AudioFeed | None:
        return self._audio.feed() if self._audio is not None else None

    def close(self) -> None:
        if self._audio is not None:
            self._audio.close()

