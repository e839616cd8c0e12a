"""Annotated video pushed live to a media server (RTSP, RTMP, SRT, UDP), for players, dashboards and
video systems to watch while the run goes on."""

from __future__ import annotations

import errno
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av

from ..containers import STREAM_FORMATS
from ..exceptions import ConfigError, SinkError
from ..retry import Backoff
from ..types import FrameResult
from ..urls import redact, scrub
from .base import Sink
from .paths import safe_name
from .video import VideoSink

__all__ = ["StreamSink", "stream_open_args", "stream_url"]

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 5.0  # how long a server has to answer a connection, or a packet once connected
_RECHECK_S = 0.05  # how often a wait (a full queue, a silent server) looks at what else has happened
_QUEUED = 4  # frames queued for the sender: a live source's slack while a frame is being sent
_CLOSE_TIMEOUT_S = OPEN_TIMEOUT_S + 2.0  # the queued frames sent (a file's paced), the session ended
# A sender that takes no frame for this long is held by a server gone quiet: one that is well takes a frame
# a second at least, and a connection tried takes two OPEN_TIMEOUT_S at most (the answer, the session).
STALL_TIMEOUT_S = 20.0
_MAX_LEFT = 2  # senders left behind at once, at most
_END = object()
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443}
_PLACEHOLDER = "{source}"
_NETWORK_ERRNOS = (errno.EPIPE, errno.ENETUNREACH, errno.ECONNABORTED, errno.ECONNRESET, errno.ETIMEDOUT,
                   errno.ECONNREFUSED, errno.EHOSTUNREACH)


def stream_open_args(url: str) -> dict:
    """What ``av.open`` needs to publish to ``url``: the container, RTSP over TCP, a time limit."""
    scheme = urlsplit(url).scheme.lower()
    options = {}
    if STREAM_FORMATS[scheme] == "rtsp":  # a server that stops answering fails the session, in microseconds
        options = {"rtsp_transport": "tcp", "timeout": str(int(OPEN_TIMEOUT_S * 1e6))}
    return {"format": STREAM_FORMATS[scheme], "options": options, "timeout": OPEN_TIMEOUT_S}


def server_answers(url: str, timeout: float = OPEN_TIMEOUT_S, cancel: threading.Event | None = None) -> str | None:
    """Ask the server at ``url`` for a first answer, as its protocol starts (RTSP's OPTIONS, RTMP's
    handshake); None if it answers, else why not. FFmpeg connects holding the interpreter lock: a server
    that takes connections and then says nothing (hung, or behind a firewall that swallows packets) would
    freeze every thread of the run, so each connection is first tried here, where waiting holds nothing.
    Connectionless protocols (UDP, SRT) answer nothing and are not asked. ``cancel``, once set, ends the
    wait for an answer (the run is ending: its --duration is not stretched by a silent server)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in (*_DEFAULT_PORTS, "tcp"):
        return None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))  # no credentials in the request
    hello = {"rtsp": f"OPTIONS {bare} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode(),
             "rtmp": b"\x03" + bytes(1536)}.get(scheme.rstrip("s"))
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
        with socket.create_connection((parts.hostname or "", port or 0), timeout=timeout) as raw:
            conn: socket.socket = raw
            if scheme.endswith("s") and scheme != "tcp":
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # FFmpeg checks; this asks
                conn = context.wrap_socket(raw, server_hostname=parts.hostname)
            if hello is not None:
                conn.sendall(hello)
                return _first_answer(conn, time.monotonic() + timeout, cancel)
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except OSError as exc:  # refused, unreachable, a name that does not resolve
        return exc.strerror or str(exc)
    except ValueError:  # urllib's message would quote the URL's port part: it may hold a password
        return "not a valid host and port"
    return None


def _first_answer(conn: socket.socket, deadline: float, cancel: threading.Event | None) -> str | None:
    """Wait for the server's first byte, in short waits, until ``deadline`` or ``cancel``."""
    conn.settimeout(_RECHECK_S)
    while True:
        try:
            return None if conn.recv(1) else "the server closed the connection"
        except TimeoutError:
            if cancel is not None and cancel.is_set():
                return "the run ended before the server answered"
            if time.monotonic() >= deadline:
                raise


def stream_url(template: str, source: str, several: bool) -> str:
    """The URL a source is published to: ``{source}`` in ``template`` replaced by its name; with several
    sources and no ``{source}``, ``-<source>`` added to the URL's path (``rtsp://host/seg-cam1``).

    Raises:
        ConfigError: several sources, a URL with no path (udp://host:port) and no ``{source}``.
    """
    safe = safe_name(source)
    if _PLACEHOLDER in template:
        return template.replace(_PLACEHOLDER, safe)
    if not several:
        return template
    parts = urlsplit(template)
    if parts.path.strip("/") == "":
        raise ConfigError(f"output.stream: with several sources, put {_PLACEHOLDER} in {redact(template)} where "
                          "each source's name goes (a port each: udp://host:{source} cannot work; a path or query)")
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}-{safe}"))


def _connection_trouble(exc: BaseException | None) -> bool:
    """Whether a failure is the network's or the server's going away, which a later try can get past (not
    an answer of the server's, such as 404 for a path it does not have)."""
    gone = (av.error.ConnectionRefusedError, av.error.ConnectionResetError, av.error.ConnectionAbortedError,
            av.error.TimeoutError, av.error.ExitError, av.error.EOFError, ConnectionError, TimeoutError)
    return isinstance(exc, gone) or (isinstance(exc, OSError) and getattr(exc, "errno", None) in _NETWORK_ERRNOS)


@dataclass(eq=False)
class _Sender:
    """A thread that sends queued frames, and its session with the server. One that a server holds in a
    write is left behind (``left``): it ends when the write does, and touches nothing but its own session."""

    queue: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=_QUEUED))  # frames, then _END
    session: VideoSink | None = None
    taken_at: float = field(default_factory=time.monotonic)  # when it last took a frame
    left: bool = False
    thread: threading.Thread = field(init=False)


class StreamSink(Sink):
    """Publishes a source's annotated frames to ``url`` as they are made.

    A file is sent at its own speed (as ``ffmpeg -re`` sends it), so players show it in real time; a live
    source as its frames come. The encoding is for a live viewer (see ``VideoSink(low_latency=True)``).
    Frames are sent by a thread of its own, behind a short queue, so that a server that is slow to answer
    or stops reading holds up no other output: a live source's frames are dropped (and counted) while the
    queue is full, a file's wait. Each connection starts with :func:`server_answers`. When the server cannot
    be reached or drops the connection, frames are dropped and the connection is tried again with backoff,
    for as long as the run lasts. A server that takes nothing for ``STALL_TIMEOUT_S`` (stopped reading,
    or a network path gone silent, which TCP notices only after many minutes) counts as a lost connection
    for a live source, whose sender is left behind; a file cannot be sent whole then, and the run fails.
    A failure of the very first connection that is not about the network (the server refuses the path or
    the codec) fails the run: trying again cannot fix it.

    Args:
        url: where to publish; the log shows it without credentials.
        open_video: makes the encoder and connection for one session with the server.
        pace: send at the frames' own timestamps (a file), not as fast as they come (a live source).
    """

    stage = "stream"
    wants_annotated = True
    takes_yuv = True

    def __init__(self, url: str, *, open_video: Callable[[], VideoSink], pace: bool,
                 backoff: Backoff = Backoff(initial=1.0, cap=30.0)) -> None:
        self.url = url
        self.open_video = open_video
        self.pace = pace
        self.backoff = backoff
        self.sent = 0
        self.dropped = 0
        self._failures = 0
        self._retry_at = 0.0
        self._closing = threading.Event()  # set by close(): no new connection is tried
        self._clock: tuple[float, float] | None = None  # (monotonic, frame time) of the pace's start
        self._last_time: float | None = None  # the last frame's time, and the one before's distance to it
        self._last_gap = 0.0
        self._rng = random.Random()
        self._sender: _Sender | None = None
        self._left: list[_Sender] = []  # senders left behind, held by a server that stopped reading
        self._failure: BaseException | None = None  # the sender's, raised to the caller
        self._skipped = 0  # frames a live source had to leave out while the queue was full

    def write(self, result: FrameResult) -> None:
        """Queue a frame for the sender (a live source's oldest queued one makes room when it is full).

        Raises:
            SinkError: the server refused the stream, this FFmpeg cannot send it, or (a file) it has
                taken nothing for ``STALL_TIMEOUT_S``.
        """
        self._raise_failure()
        if self._sender is None:
            self._sender = self._start_sender()
        self._enqueue(result)

    def _start_sender(self) -> _Sender:
        sender = _Sender()
        sender.thread = threading.Thread(target=self._send_all, args=(sender,), name="streamseg-stream-send",
                                         daemon=True)
        sender.thread.start()
        return sender

    def _enqueue(self, item: Any) -> None:
        while (sender := self._sender) is not None:
            try:
                sender.queue.put(item, timeout=_RECHECK_S) if self.pace else sender.queue.put_nowait(item)
                return
            except queue.Full:
                self._raise_failure()
                if not sender.thread.is_alive():
                    return  # nothing reads it any more
                if item is not _END and time.monotonic() - sender.taken_at > STALL_TIMEOUT_S and self._leave(sender):
                    continue  # it was held in a write that nothing times out: a new sender takes over
                if not self.pace:
                    try:
                        sender.queue.get_nowait()
                        self._skipped += 1
                    except queue.Empty:
                        pass

    def _leave(self, sender: _Sender) -> bool:
        """Leave a sender the server has stopped reading behind; whether a new one took over (not while
        _MAX_LEFT are still held: a server that answers each new connection and then reads nothing would
        hold a thread and a session each, as long as it lives).

        Raises:
            SinkError: the source is a file, which cannot be sent whole now.
        """
        why = f"the server has taken nothing for {STALL_TIMEOUT_S:.0f} s"
        if self.pace:
            sender.left = True
            raise SinkError(f"{redact(self.url)}: {why}; giving up on it")
        self._left = [held for held in self._left if held.thread.is_alive()]
        if len(self._left) >= _MAX_LEFT:
            return False
        sender.left = True
        self._left.append(sender)
        self.dropped += sender.queue.qsize()
        self._retry_later(why, lost=True)
        self._sender = self._start_sender()
        return True

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _send_all(self, sender: _Sender) -> None:
        try:
            while not sender.left and (item := sender.queue.get()) is not _END:
                sender.taken_at = time.monotonic()
                self._send(sender, item)
        except BaseException as exc:  # noqa: BLE001 - raised to the caller by write() or close()
            if not sender.left:
                self._failure = exc
        finally:
            self._finish(sender)

    def _send(self, sender: _Sender, result: FrameResult) -> None:
        if sender.session is None and not self._connect(sender):
            self.dropped += 1
            return
        assert sender.session is not None
        if self.pace:
            self._wait_for(result.time)
        try:
            sender.session.write(result)
        except SinkError as exc:
            if not sender.left:
                self._lost(sender, exc)
            return
        if sender.left:
            return
        if self._failures:
            log.warning("%s: streaming again", redact(self.url))
            self._failures = 0
        self.sent += 1

    def _connect(self, sender: _Sender) -> bool:
        """Whether a session is open: one is opened once the server has answered. A live source's stream
        tries no more once closing (the run has ended); a file's is sent whole, so it still does."""
        cancel = None if self.pace else self._closing
        if time.monotonic() < self._retry_at or (cancel is not None and cancel.is_set()):
            return False
        why = server_answers(self.url, cancel=cancel)
        if why is not None:
            if not self._closing.is_set():
                self._retry_later(why)
            return False
        sender.session = self.open_video()
        return True

    def _wait_for(self, frame_time: float) -> None:
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, frame_time)
        if self._last_time is not None:
            self._last_gap = frame_time - self._last_time
        self._last_time = frame_time
        due = self._clock[0] + frame_time - self._clock[1]
        if due < now - 1.0 or due > now + 1.0:  # far behind (a slow run) or a gap in the file: start over
            self._clock = (now, frame_time)
        elif due > now:
            time.sleep(due - now)

    def _lost(self, sender: _Sender, exc: SinkError) -> None:
        scrub(exc)  # PyAV's error, chained below, names the URL with its credentials
        session, sender.session = sender.session, None
        if session is not None:
            try:
                session.close()
            except SinkError:
                pass  # the connection is gone: there is nothing to finish
        cause = exc.__cause__
        if isinstance(cause, av.error.ProtocolNotFoundError):  # PyPI's PyAV has no SRT, for one
            raise SinkError(f"{redact(self.url)}: this FFmpeg cannot publish {urlsplit(self.url).scheme}:// "
                            "(built without it); use rtsp://, rtmp:// or udp://")
        if self.sent == 0 and self._failures == 0 and not _connection_trouble(cause):
            raise SinkError(f"{redact(self.url)}: cannot publish: {getattr(cause, 'strerror', None) or cause or exc}")
        self.dropped += 1
        self._retry_later(getattr(cause, "strerror", None) or cause or exc)

    def _retry_later(self, reason: object, *, lost: bool = False) -> None:
        self._failures += 1
        delay = self.backoff.delay(self._failures, self._rng)
        self._retry_at = time.monotonic() + delay
        log.warning("%s: %s (%s); trying again in %.1f s", redact(self.url),
                    "connection lost" if lost or self.sent else "cannot connect", reason, delay)

    def close(self) -> None:
        """Send what is queued and end the session with the server (it sees the stream end); safe to call
        twice. A sender still held by a server that stopped reading is left behind, with a warning.

        Raises:
            SinkError: the server refused the stream.
        """
        self._closing.set()  # a live source's connection still being tried is given up: the run has ended
        sender = self._sender
        if sender is not None:
            try:
                if not sender.left:  # else it ends once its write does, sending nothing more
                    self._enqueue(_END)
                    sender.thread.join(timeout=_CLOSE_TIMEOUT_S)
            finally:
                if sender.thread.is_alive():
                    log.warning("%s: the server is not taking the stream; leaving it", redact(self.url))
                self._sender = None
        if self._skipped:
            log.warning("%s: %d frames left out while the server was slow to take them", redact(self.url),
                        self._skipped)
            self._skipped = 0
        self._raise_failure()

    def _finish(self, sender: _Sender) -> None:
        """A sender's end: the last frame shown its time, the session ended."""
        session, sender.session = sender.session, None
        if session is not None:
            if self.pace and self._last_time is not None and not sender.left:
                self._wait_for(self._last_time + min(self._last_gap, 1.0))  # the last frame is shown its time
            try:
                session.close()
            except SinkError as exc:
                if not sender.left:
                    log.warning("%s: %s", redact(self.url), exc)
        if self.dropped and not sender.left:
            log.warning("%s: %d frames could not be sent", redact(self.url), self.dropped)
