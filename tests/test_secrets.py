"""Credentials in a URL never show: not in messages, tracebacks, records, file names, the page or metadata.

Cameras put passwords in the user part (which may hold a raw ``/``), in the path
(``/user=admin&password=SECRET&channel=1``) or in the query (``?token=...``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import av
import pytest

from streamseg.urls import redact, redact_text, scrub, url_name

from .conftest import RtspServer, free_port, needs_rtsp, run_cli, write_clip

HOSTILE = [
    "rtsp://admin:Pr1v/ate@127.0.0.1:8554/cam",
    "rtsp://admin:Pr1v?ate@127.0.0.1:8554/cam",
    "rtsp://admin:Pr1v#ate@127.0.0.1:8554/cam",
    "rtsp://admin:Pr1v@ate@127.0.0.1:8554/cam",
    "rtsp://[::1/cam",
    "rtsp://admin:Pr1vate@[::1]:99999999/cam",
    "rtsp://127.0.0.1/user=admin&password=Pr1vate&channel=1",
    "rtsp://127.0.0.1/cam?pwd=Pr1vate&channel=1",
    "http://127.0.0.1/live;auth=Pr1vate/stream",
    "rtmp://127.0.0.1/live/streamkey=Pr1vate",
    "https://bucket.example/v.m3u8?X-Amz-Signature=Pr1vate",
    "rtsp://:Pr1vate@",
    "://Pr1vate@",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_redaction_never_raises_and_never_shows_the_secret(url: str) -> None:
    shown = redact(url)
    assert "Pr1v" not in shown and "ate@" not in shown, shown
    assert "Pr1v" not in redact_text(f"cannot open '{url}': refused"), url
    assert "Pr1v" not in url_name(url)


def test_a_url_keeps_what_is_not_secret() -> None:
    assert redact("rtsp://127.0.0.1:8554/user=admin&password=x&channel=1") == (
        "rtsp://127.0.0.1:8554/user=***&password=***&channel=1")
    assert url_name("rtsp://127.0.0.1:8554/user=admin&password=x&channel=1") == "channel=1"
    assert redact("rtsp://[::1]:8554/cam") == "rtsp://[::1]:8554/cam"


def test_an_error_chain_from_pyav_is_redacted_in_place() -> None:
    url = "rtsp://admin:Pr1vate@127.0.0.1:1/cam"
    try:
        try:
            raise av.error.HTTPUnauthorizedError(825242872, "Unauthorized", url)
        except av.FFmpegError as inner:
            raise RuntimeError(f"publishing to {url} failed") from inner
    except RuntimeError as exc:
        scrub(exc)
        import traceback

        text = "".join(traceback.format_exception(exc))
    assert "Pr1v" not in text and "rtsp://***@127.0.0.1:1/cam" in text, text


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_a_raw_slash_in_a_password_is_one_line_without_the_secret(tmp_path: Path, tiny_model: Path,
                                                                 debug: list[str]) -> None:
    """FFmpeg, like every URL parser, ends the host at the first ``/``: such a URL cannot work, so it is
    refused before anything connects, with how to write it."""
    proc = run_cli("segment", "rtsp://admin:Pr1v/ate@127.0.0.1:8554/cam", "--duration", "5", "--save-masks",
                   str(tmp_path / "m.jsonl"), "--model", str(tiny_model), *debug, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Pr1v" not in proc.stderr and "ate@" not in proc.stderr, proc.stderr
    assert "percent-encoded (%2F" in proc.stderr
    if not debug:
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "m.jsonl").exists()


def _everything_written(folder: Path) -> str:
    """File names, file contents, and the containers' metadata, as one text to search."""
    parts = []
    for path in sorted(folder.rglob("*")):
        parts.append(path.name)
        if path.is_file():
            parts.append(path.read_bytes().decode("latin-1"))
            if path.suffix in (".mp4", ".mkv"):
                with av.open(str(path)) as container:
                    parts.append(json.dumps([container.metadata, *[s.metadata for s in container.streams]]))
    return "\n".join(parts)


@needs_rtsp
def test_no_output_shows_a_cameras_credentials(tmp_path: Path, tiny_model: Path) -> None:
    """Two cameras: one with a password holding ``/`` (percent-encoded, as it must be), one with its
    credentials in the path and query. The run works, and no output shows either secret: stderr with
    --debug, the JSONL, the file names and metadata, /stats and the page."""
    locked = RtspServer("cam:15", auth="admin:Pr1v/ate").start()
    open_one = RtspServer("user=admin&password=Pr1vate&channel=1:15").start()
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    pages: list[str] = []

    def fetch() -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(pages) < 2:
            try:
                for path in ("/stats", "/"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
                        text = answer.read().decode()
                        if path == "/" or '"frames": 0' not in text.replace('"frames":0', '"frames": 0'):
                            pages.append(text)
                time.sleep(1.0)
            except OSError:
                time.sleep(0.2)

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    try:
        proc = run_cli("segment", locked.url("cam", "admin:Pr1v%2Fate"),
                       open_one.url("user=admin&password=Pr1vate&channel=1") + "?token=Pr1vate",
                       "--model", str(tiny_model), "-o", str(out / "rec.mp4"), "--save-masks", str(out / "m.jsonl"),
                       "--serve", f"127.0.0.1:{port}", "--duration", "6", "--debug", timeout=120)
    finally:
        locked.stop()
        open_one.stop()
    fetcher.join(timeout=10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["m-cam.jsonl", "m-channel_1.jsonl", "rec-cam.mp4",
                                                      "rec-channel_1.mp4"]
    records = [json.loads(line) for path in out.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert {r["source"] for r in records} == {"cam", "channel=1"}, {r["source"] for r in records}
    assert pages, "the page never answered"
    for text in (proc.stderr, proc.stdout, _everything_written(out), *pages):
        assert "Pr1v" not in text, text[:2000]


@needs_rtsp
def test_debug_does_not_show_a_stream_urls_password(tmp_path: Path, tiny_model: Path) -> None:
    """A server that refuses the stream's credentials: --debug prints the traceback, with PyAV's chained
    error, and the password is in none of it."""
    server = RtspServer(f"out:record={tmp_path / 'got.mkv'}", auth="user:right").start()
    clip = write_clip(tmp_path / "in.mp4", frames=10)
    try:
        proc = run_cli("segment", str(clip), "--model", str(tiny_model), "--stream",
                       server.url("out", "user:Pr1vate"), "--debug", timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert "Traceback" in proc.stderr and "rtsp://***@127.0.0.1" in proc.stderr, proc.stderr[-3000:]
    assert "Pr1v" not in proc.stderr, proc.stderr
