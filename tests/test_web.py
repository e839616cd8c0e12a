"""The preview server (--serve) facing the network: a token, IPv6, many and idle clients."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streamseg.sinks import web
from streamseg.sinks.web import WebPreviewSink

from .conftest import free_port


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(200_000) if "mjpg" not in url else answer.read(100)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served():
    sinks = []

    def serve(address: str, token: str | None = None) -> WebPreviewSink:
        sink = WebPreviewSink(address, ["cam"], token=token)
        sink.open()
        sink.publish_stats([{"source": "cam"}])
        sinks.append(sink)
        return sink

    yield serve
    for sink in sinks:
        sink.close()


def test_every_path_asks_for_the_token(served) -> None:
    sink = served(f"127.0.0.1:{free_port()}", token="s3cret-token")
    base = f"http://127.0.0.1:{sink.port}"
    for path in ("/", "/stats", "/stream/0.mjpg", "/frame/0.jpg"):
        assert _get(base + path)[0] == 401, path
        assert _get(base + path + "?token=wrong-token")[0] == 401, path
    assert _get(base + "/stats?token=s3cret-token") == (200, b'[{"source": "cam"}]')
    assert _get(base + "/stats", {"Authorization": "Bearer s3cret-token"})[0] == 200
    status, page = _get(sink.url)
    assert status == 200 and sink.url == f"{base}/?token=s3cret-token"
    # The page's own links carry the token: its streams and its stats.
    assert b'src="/stream/0.mjpg?token=s3cret-token"' in page and b"fetch('/stats?token=s3cret-token'" in page


def test_serving_beyond_loopback_warns_and_makes_up_a_token(served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamseg")
    sink = served(f"0.0.0.0:{free_port()}")
    assert "listens beyond this machine" in caplog.text
    assert sink.token and len(sink.token) >= 16 and sink.url.endswith(f"?token={sink.token}")
    assert sink.token not in caplog.text
    assert _get(f"http://127.0.0.1:{sink.port}/stats")[0] == 401
    assert _get(f"http://127.0.0.1:{sink.port}/stats?token={sink.token}")[0] == 200


def test_loopback_without_a_token_stays_open(served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamseg")
    sink = served(str(free_port()))
    assert sink.token is None and "beyond" not in caplog.text
    assert _get(f"http://127.0.0.1:{sink.port}/stats")[0] == 200


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
def test_an_ipv6_address_is_served(served) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sink = served("[::1]:0")
    assert sink.url.startswith(f"http://[::1]:{sink.port}/")
    assert _get(f"http://[::1]:{sink.port}/stats")[0] == 200


def test_many_idle_connections_neither_queue_nor_hold_threads(served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hundred connections that send nothing: each is taken by the kernel at once (no SYN waits for a
    retry, which the stdlib's backlog of 5 made 1 s, 3 s...), at most MAX_CLIENTS threads serve them, a real
    request still gets its answer, and the idle ones are closed after the client time limit."""
    monkeypatch.setattr(web, "CLIENT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(web, "MAX_CLIENTS", 16)
    sink = served(f"127.0.0.1:{free_port()}")
    before = threading.active_count()
    idle = []
    try:
        for _ in range(100):
            conn = socket.socket()
            conn.settimeout(0.9)  # under the kernel's first SYN retry (1 s): a full backlog would show here
            conn.connect(("127.0.0.1", sink.port))
            idle.append(conn)
        time.sleep(0.3)
        assert threading.active_count() <= before + 16
        status, _ = _get(f"http://127.0.0.1:{sink.port}/stats")
        assert status in (200, 503)  # served, or told at once that the server is full: never left waiting
        time.sleep(1.5)
        # Past the time limit the idle connections were closed and their threads are gone.
        full = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n\r\n"
        answers = set()
        for conn in idle:
            conn.settimeout(2)
            answers.add(conn.recv(200))
        assert answers == {b"", full}, answers  # closed after the limit, or turned away at once
        assert threading.active_count() <= before + 2
        assert _get(f"http://127.0.0.1:{sink.port}/stats")[0] == 200
    finally:
        for conn in idle:
            conn.close()


def test_a_made_up_token_is_printed_once(tmp_path: Path, tiny_model: Path) -> None:
    """Beyond loopback the command line makes up a token and says it with the page's address, once: the
    summary line names the page without it."""
    from .conftest import run_cli, write_clip

    clip = write_clip(tmp_path / "in.mp4", frames=4)
    proc = run_cli("segment", str(clip), "--model", str(tiny_model), "--serve", f"0.0.0.0:{free_port()}")
    assert proc.returncode == 0, proc.stderr
    token = re.search(r"live preview on http://0\.0\.0\.0:\d+/\?token=([\w-]+)", proc.stderr)
    assert token is not None, proc.stderr
    assert proc.stderr.count(token.group(1)) == 1, proc.stderr
    assert "listens beyond this machine" in proc.stderr
