"""A live web preview: each source's annotated stream as MJPEG, with live stats, on a small page.

The sink owns an HTTP server thread (one more thread per viewer, at most ``MAX_CLIENTS`` of them; a
connection that sends nothing, or stops reading, is dropped after ``CLIENT_TIMEOUT_S``), started by
:meth:`WebPreviewSink.open` and joined by :meth:`WebPreviewSink.close`. It listens on 127.0.0.1 unless told
otherwise. With a token, every path asks for it (``?token=`` or an ``Authorization: Bearer`` header); one
is made up when the server listens beyond loopback and none was given. Viewers only ever see the newest
frame: a slow browser never slows the run.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import cv2

from ..exceptions import SinkError
from ..types import FrameResult
from .base import Sink

__all__ = ["WebPreviewSink", "Latest", "jpeg", "parse_address"]

log = logging.getLogger(__name__)

BOUNDARY = "streamsegframe"
MAX_CLIENTS = 64  # connections served at once, each a thread; more are answered 503 at once
CLIENT_TIMEOUT_S = 10.0  # a connection that sends no request, or takes no bytes, for this long is closed
BACKLOG = 128  # connections the kernel holds before they are taken: a page with many streams opens them at once


class Latest:
    """The newest value of something, readable by many threads; a queue of length one that nobody drains."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: bytes | None = None
        self._version = 0
        self._closed = False

    def publish(self, value: bytes) -> None:
        with self._cond:
            self._value, self._version = value, self._version + 1
            self._cond.notify_all()

    def get(self) -> tuple[int, bytes | None]:
        with self._cond:
            return self._version, self._value

    def wait_newer(self, version: int, timeout: float) -> tuple[int, bytes | None] | None:
        """The value once it is newer than ``version``; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > version or self._closed, timeout)
            if self._closed or self._version <= version:
                return None
            return self._version, self._value

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed


def parse_address(address: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; the host defaults to 127.0.0.1 (loopback only)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: where it resolves is not known here, so it counts as reachable
        return False


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a deeper backlog, IPv6 addresses, and a bound on the threads it runs."""

    request_queue_size = BACKLOG
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - the stdlib's signature
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def jpeg(result: FrameResult, quality: int = 80) -> bytes | None:
    """A result's picture (drawn, where it was) as JPEG, or None where OpenCV cannot encode it."""
    image = result.annotated if result.annotated is not None else result.frame.image
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return encoded.tobytes() if ok else None


class WebPreviewSink(Sink):
    """Serves ``/`` (the page), ``/stream/N.mjpg``, ``/frame/N.jpg`` and ``/stats`` for sources 0..N-1.

    Args:
        address: ``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``.
        sources: source names, in the order of their stream numbers.
        max_fps: at most this many JPEGs encoded per source and second.
        token: asked of every request; None makes one up where the server listens beyond loopback, and
            leaves a loopback server open.
    """

    stage = "serve"
    wants_annotated = True
    wants_stats = True

    def __init__(self, address: str, sources: list[str], *, max_fps: float = 15.0, quality: int = 80,
                 token: str | None = None) -> None:
        self.host, self.port = parse_address(address)
        self.beyond_loopback = not is_loopback(self.host)
        self.token = token or (secrets.token_urlsafe(16) if self.beyond_loopback else None)
        self.sources = list(sources)
        self.max_fps = max_fps
        self.quality = quality
        self.frames = {name: Latest() for name in self.sources}
        self.stats = Latest()
        self._last_encode = dict.fromkeys(self.sources, 0.0)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The page's address without its token, for summaries and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def url(self) -> str:
        """The page's address with its token: what a viewer opens, said once."""
        return self.address + _token_query(self.token)

    def open(self) -> None:
        handler = type("Handler", (_Handler,), {"sink": self, "timeout": CLIENT_TIMEOUT_S})
        try:
            self._server = _Server((self.host, self.port), handler)
        except (OSError, OverflowError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise SinkError(f"cannot serve on {self.host}:{self.port}: {why}") from exc
        self.port = self._server.server_address[1]
        if self.beyond_loopback:
            log.warning("the live preview listens beyond this machine (%s); every request needs its token",
                        self.host)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="streamseg-web", daemon=True)
        self._thread.start()
        log.info("live preview on %s", self.address)

    def write(self, result: FrameResult) -> None:
        now = time.monotonic()
        name = result.source
        if name not in self.frames or now - self._last_encode[name] < 1 / self.max_fps:
            return
        self._last_encode[name] = now
        if (encoded := jpeg(result, self.quality)) is not None:
            self.frames[name].publish(encoded)

    def publish_stats(self, snapshot: list[dict]) -> None:
        self.stats.publish(json.dumps(snapshot).encode())

    def close(self) -> None:
        for latest in [*self.frames.values(), self.stats]:
            latest.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    sink: WebPreviewSink

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        log.debug("web: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = urlsplit(self.path)
        path = parts.path
        if not self._allowed(parse_qs(parts.query).get("token", [""])[0]):
            self._send(401, "text/plain", b"a token is needed: ?token=... or Authorization: Bearer ...\n")
            return
        if path == "/":
            self._send(200, "text/html; charset=utf-8", _page(self.sink.sources, self.sink.token).encode())
        elif path == "/stats":
            self._send(200, "application/json", self.sink.stats.get()[1] or b"[]")
        elif path.startswith("/frame/") and path.endswith(".jpg"):
            latest = self._source(path[len("/frame/") : -len(".jpg")])
            value = latest.get()[1] if latest else None
            if value is None:
                self._send(404, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", value)
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            latest = self._source(path[len("/stream/") : -len(".mjpg")])
            if latest is None:
                self._send(404, "text/plain", b"no such stream\n")
            else:
                self._stream(latest)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _allowed(self, query_token: str) -> bool:
        token = self.sink.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        given = header[len("Bearer "):] if header.startswith("Bearer ") else query_token
        return hmac.compare_digest(given.encode(), token.encode())

    def _source(self, key: str) -> Latest | None:
        if key.isdigit() and int(key) < len(self.sink.sources):
            return self.sink.frames[self.sink.sources[int(key)]]
        return None

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, latest: Latest) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        version = 0
        try:
            while True:
                got = latest.wait_newer(version, timeout=1.0)
                if got is None:
                    if latest.closed:
                        return
                    continue
                version, jpeg = got
                assert jpeg is not None
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
        except OSError:  # gone, or took nothing for CLIENT_TIMEOUT_S
            return


def _token_query(token: str | None) -> str:
    """``?token=...`` for a link, or nothing where no token is asked."""
    return f"?token={quote(token)}" if token else ""


def _page(sources: list[str], token: str | None) -> str:
    """The page; its own links carry the token it was opened with."""
    query = _token_query(token)
    figures = "\n".join(
        f'<figure><img src="/stream/{i}.mjpg{html.escape(query)}" alt="{html.escape(name)}">'
        f'<figcaption><b>{html.escape(name)}</b> <span id="s{i}">waiting…</span></figcaption></figure>'
        for i, name in enumerate(sources)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>streamseg live</title>
<style>
body {{ font-family: sans-serif; background: #111; color: #eee; margin: 1em; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }}
figure {{ margin: 0; }} img {{ width: 100%; background: #222; }}
figcaption {{ font-size: 0.9em; padding: 0.3em 0; }}
</style></head>
<body><h1>streamseg live</h1><main>
{figures}
</main>
<script>
async function refresh() {{
  try {{
    const stats = await (await fetch('/stats{json.dumps(query)[1:-1]}', {{cache: 'no-store'}})).json();
    stats.forEach((s, i) => {{
      const el = document.getElementById('s' + i);
      if (el) el.textContent = `${{s.state}} · ${{s.fps_out.toFixed(1)}} fps · ` +
        `latency p50 ${{s.latency_p50_ms.toFixed(0)}} ms p99 ${{s.latency_p99_ms.toFixed(0)}} ms · dropped ${{s.dropped}}`;
    }});
  }} catch (e) {{}}
}}
setInterval(refresh, 1000); refresh();
</script>
</body></html>
"""
