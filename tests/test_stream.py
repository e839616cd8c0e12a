"""Publishing the annotated video live (``--stream URL``), to a real RTSP server that records what it is sent."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from streamseg import ConfigError, Pipeline, load_config
from streamseg.sinks.stream import server_answers, stream_url

from .conftest import RtmpServer, RtspServer, ThreadProbe, free_port, needs_rtmp, needs_rtsp, read_video, run_cli, write_clip


def _received(path: Path) -> list[av.VideoFrame]:
    """The frames a recording server kept (a file it may not have finished: what decodes)."""
    frames: list[av.VideoFrame] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame)
    except (av.FFmpegError, OSError):
        pass
    return frames


def _config(sources: list[str], model: Path, **overrides):
    return load_config(None, sources=tuple(sources), model__name=str(model), postprocess__threshold=0.0,
                       live__stats_interval_s=0.0, **overrides)


def test_stream_urls_for_one_and_several_sources() -> None:
    assert stream_url("rtsp://h:8554/seg", "cam1", several=False) == "rtsp://h:8554/seg"
    assert stream_url("rtsp://h:8554/seg", "cam 1", several=True) == "rtsp://h:8554/seg-cam_1"
    assert stream_url("rtsp://h:8554/live/{source}", "cam1", several=True) == "rtsp://h:8554/live/cam1"
    assert stream_url("srt://h:9000?streamid={source}", "cam1", several=True) == "srt://h:9000?streamid=cam1"
    with pytest.raises(ConfigError, match=r"\{source\}"):
        stream_url("udp://239.0.0.1:5000", "cam1", several=True)


def test_a_stream_url_is_checked_before_any_work(tmp_path: Path) -> None:
    proc = run_cli("segment", "in.mp4", "--stream", "http://user:secret@host/x")
    assert proc.returncode == 2 and "error: output.stream: expected an rtsp://" in proc.stderr, proc.stderr
    assert "secret" not in proc.stderr


def _publish_file(tmp_path: Path, model: Path, mount: str, suffix: str = ".mp4", sinks: list | None = None,
                  **clip) -> tuple[Path, float, list[str], int]:
    """Publish a clip to a recording RTSP server (and to ``sinks``): what the server kept, how long the
    run took, the run's outputs and frames."""
    received = tmp_path / "got.mkv"
    server = RtspServer(f"in:{mount}={received}").start()
    try:
        src = write_clip(tmp_path / f"in{suffix}", **clip)
        with Pipeline(_config([str(src)], model, output__stream=server.url("in")), sinks=sinks) as pipeline:
            started = time.monotonic()
            summary = pipeline.run()
            took = time.monotonic() - started
        server.wait_written()
    finally:
        server.stop()
    assert summary.outputs == [server.url("in")]
    return received, took, summary.outputs, summary.frames


@needs_rtsp
def test_a_file_is_published_whole_at_its_own_speed(tmp_path: Path, tiny_model: Path) -> None:
    """Every frame reaches the server, sent at the file's 30 fps (as ``ffmpeg -re`` sends a file), not in
    a burst that players would show as a flash of fast motion (and servers lose frames of: GStreamer's
    kept 25 of 60). Sending on time comes first: the threads keep the caller's priority, where a file's
    other stages otherwise yield to the forward pass on a CPU (see inference.threads)."""
    probe = ThreadProbe()
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    received, took, _, frames = _publish_file(tmp_path, tiny_model, "record", frames=60, sinks=[probe])
    assert frames == 60 and len(_received(received)) == 60
    assert took >= 1.8, took  # 60 frames at 30 fps: 2 s
    assert probe.seen == {(mine, 1)}


@needs_rtsp
@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_a_files_sound_is_published_with_its_picture(tmp_path: Path, tiny_model: Path, suffix: str) -> None:
    """MP4's AAC is described once, up front, as RTP wants it; MPEG-TS's (ADTS) in a header on every packet,
    which RTP refuses until it is moved up front."""
    received, _, _, _ = _publish_file(tmp_path, tiny_model, "record-av", suffix, frames=60, audio=True)
    assert len(_received(received)) == 60  # the server's muxer writes what it held back at the end (eos-shutdown)
    with av.open(str(received)) as container:
        sound = [p for p in container.demux(audio=0) if p.dts is not None]
    assert 1.8 <= len(sound) * 1024 / 48000 <= 2.05  # the picture's 2 s of it, in packets of 1024 samples


@needs_rtsp
def test_a_cameras_sound_is_published_and_recorded_alike(tmp_path: Path, tiny_model: Path) -> None:
    """A camera with sound, published and recorded at once: each output gets all of the sound (each its own
    copy of every packet), in step with its picture."""
    camera = RtspServer("cam:15:av").start()
    received, recorded = tmp_path / "got.mkv", tmp_path / "rec.mp4"
    server = RtspServer(f"out:record-av={received}").start()
    cfg = _config([camera.url("cam")], tiny_model, output__stream=server.url("out"), output__video=str(recorded),
                  duration=6.0)
    try:
        with Pipeline(cfg) as pipeline:
            pipeline.run()
        server.wait_written()
    finally:
        server.stop()
        camera.stop()
    for path in (received, recorded):
        with av.open(str(path)) as container:
            times = [(p.stream.type, float(p.pts * p.time_base)) for p in container.demux() if p.dts is not None]
        picture = [t for kind, t in times if kind == "video"]
        sound = [t for kind, t in times if kind == "audio"]
        assert len(picture) >= 3 and picture[-1] - picture[0] > 3.0 and sound, path  # of a 6 s run, at any load
        assert sound[-1] - sound[0] > 0.6 * (picture[-1] - picture[0]), (path, sound[0], sound[-1], picture[-1])


def _restartable_receiver(protocol: str, tmp_path: Path) -> tuple[RtspServer | RtmpServer, str, Path,
                                                                    Callable[[], Path]]:
    """A recording media server: it, the URL to publish to, its first recording, and a restart on the same
    port into a second recording (which it returns)."""
    if protocol == "rtsp":
        first, second = tmp_path / "first.mkv", tmp_path / "second.mkv"
        rtsp = RtspServer(f"out:record={first}").start()

        def restart_rtsp() -> Path:
            rtsp.stop()
            rtsp.mounts = (f"out:record={second}",)
            time.sleep(1.0)
            rtsp.start()
            return second

        return rtsp, rtsp.url("out"), first, restart_rtsp
    rtmp = RtmpServer(tmp_path / "first").start()

    def restart_rtmp() -> Path:
        rtmp.stop()
        rtmp.folder = tmp_path / "second"
        time.sleep(1.0)
        return rtmp.start().recording("cam")

    return rtmp, rtmp.url("cam"), rtmp.recording("cam"), restart_rtmp


@needs_rtsp
@pytest.mark.parametrize("protocol", ["rtsp", pytest.param("rtmp", marks=needs_rtmp)])
def test_a_camera_is_republished_and_the_stream_comes_back_after_the_server_restarts(
        tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    """A media server restarted (an update, a crash) is a dropped connection, not the end of the run:
    the stream is tried again with backoff (RTMP's handshake answered again), and the camera goes on being
    published once it is back."""
    camera = RtspServer("cam:15").start()
    server, url, first, restart = _restartable_receiver(protocol, tmp_path)
    cfg = _config([camera.url("cam")], tiny_model, output__stream=url)
    caplog.set_level(logging.WARNING, logger="streamseg")
    second = None
    try:
        with Pipeline(cfg) as pipeline:
            started = time.monotonic()
            for _ in pipeline.results():
                elapsed = time.monotonic() - started
                if second is None and elapsed > 4:
                    second = restart()  # on the same port
                if second is not None and len(_received(second)) >= 15 or elapsed > 40:
                    break
    finally:
        server.stop()
        camera.stop()
    assert len(_received(first)) >= 15
    assert second is not None and len(_received(second)) >= 15, caplog.text
    assert "connection lost" in caplog.text and "streaming again" in caplog.text


def test_a_server_that_is_not_there_does_not_fail_the_run(tmp_path: Path, tiny_model: Path) -> None:
    """Nothing listens: the other outputs are written whole, the stream is retried, and the run ends
    saying how many frames could not be sent."""
    src = write_clip(tmp_path / "in.mp4", frames=20)
    masks = tmp_path / "m.jsonl"
    proc = run_cli("segment", str(src), "--model", str(tiny_model), "--save-masks", str(masks),
                   "--stream", f"rtsp://user:secret@127.0.0.1:{free_port()}/out")
    assert proc.returncode == 0, proc.stderr
    assert len(masks.read_text().splitlines()) == 20
    assert "cannot connect" in proc.stderr and "frames could not be sent" in proc.stderr
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr


class SilentServer:
    """A server that takes connections and never answers nor reads (a hung media server, a firewall that
    swallows the packets): each try to publish lasts until its time limit, and a stream fills the buffers
    at once. After :meth:`release` it reads the connections that come, to their end, counting the bytes,
    and closes those it held (a server that recovered, a new route)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by each connection
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        self.reading = threading.Event()
        self.received = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn = self.socket.accept()[0]
            except OSError:  # closed
                return
            if self.reading.is_set():
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()
            else:
                self.held.append(conn)

    def _read(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                self.received += len(data)

    def release(self) -> None:
        self.reading.set()
        for conn in self.held:
            conn.close()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() (closing alone would not)
        self.socket.close()
        self._thread.join(timeout=5)
        self.release()


@pytest.mark.parametrize("scheme", ["rtsp", "rtmp", "rtmps", "tcp"])
def test_a_server_is_asked_for_an_answer_before_ffmpeg_connects(scheme: str) -> None:
    """Each protocol's first words (RTSP's OPTIONS, RTMP's handshake, TLS's) go unanswered by a silent
    server, and a closed port refuses; plain TCP (MPEG-TS) has no words, so taking the connection is its
    answer; UDP, which answers nothing, is not asked."""
    with SilentServer() as silent:
        why = server_answers(f"{scheme}://user:pw@127.0.0.1:{silent.port}/x", timeout=0.5)
        assert why == (None if scheme == "tcp" else "no answer in 0.5 s")
    assert "refused" in server_answers(f"{scheme}://127.0.0.1:{free_port()}/x", timeout=0.5)
    assert server_answers(f"udp://127.0.0.1:{free_port()}", timeout=0.5) is None


@needs_rtsp
def test_a_real_rtsp_server_answers(tmp_path: Path) -> None:
    server = RtspServer(f"out:record={tmp_path / 'got.mkv'}").start()
    try:
        assert server_answers(server.url("out")) is None
    finally:
        server.stop()


def _assert_recorded_throughout(path: Path) -> None:
    """The recording of an 8 s run went on while a stream's server stalled (5 s): it spans more than half the
    run with no gap near the stall. Not a frame count: how many frames a run segments depends on the load."""
    pts, time_base, _ = read_video(path)
    times = [float(t * time_base) for t in pts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3 and times[-1] - times[0] > 4.0 and max(gaps) < 2.0, (
        len(times), times[-1] - times[0], max(gaps))


@needs_rtsp
def test_a_server_that_never_answers_does_not_hold_up_the_other_outputs(tmp_path: Path, tiny_model: Path) -> None:
    """Connecting waits up to its time limit (5 s) for a server that does not answer, again at every retry;
    it waits beside the run, not in its way: the camera's recording has no gap, and the run ends on time.
    (FFmpeg waiting on such a server froze the whole process, holding the interpreter lock: run as a
    command, which the test can stop.)"""
    camera = RtspServer("cam:15").start()
    recorded = tmp_path / "rec.mp4"
    try:
        with SilentServer() as silent:
            proc = run_cli("segment", camera.url("cam"), "--model", str(tiny_model), "-o", str(recorded),
                           "--duration", "8", "--stream", f"rtsp://127.0.0.1:{silent.port}/out", timeout=60)
            assert silent.held, "nothing tried to connect"
    finally:
        camera.stop()
    assert proc.returncode == 0, proc.stderr
    assert "cannot connect (no answer in 5 s)" in proc.stderr
    _assert_recorded_throughout(recorded)
    # The run ends at its --duration: a try still waiting for the server then is given up, where it used to
    # hold the end for the rest of its 5 s (12.9 s in all).
    took = float(re.search(r"frames in ([0-9.]+) s", proc.stderr).group(1))
    assert took < 8 + 3.0, proc.stderr


@needs_rtsp
def test_a_stream_nobody_reads_does_not_hold_up_the_recording(tmp_path: Path, tiny_model: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A server that stops reading mid-stream (a stalled RTMP server: nothing times it out) blocks the
    stream's sender; the camera's recording goes on without a gap, the stream's frames are left out and
    counted, and the run ends, leaving the stuck sender behind. The stream here is a FIFO whose reader
    never reads: it takes 64 KiB, then blocks."""
    from streamseg.sinks.stream import StreamSink
    from streamseg.sinks.video import VideoSink
    from streamseg.sources.live import LIVE_TIME_BASE

    fifo = tmp_path / "stream.ts"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, never reading
    camera = RtspServer("cam:15").start()
    recorded = tmp_path / "rec.mp4"
    stuck = StreamSink(str(fifo), pace=False, open_video=lambda: VideoSink(
        fifo, time_base=LIVE_TIME_BASE, crf=0, preset="ultrafast", low_latency=True, rebase=True,
        open_args={"format": "mpegts"}))
    caplog.set_level(logging.WARNING, logger="streamseg")
    try:
        cfg = _config([camera.url("cam")], tiny_model, output__video=str(recorded), duration=8.0)
        with Pipeline(cfg, sinks=[stuck]) as pipeline:
            pipeline.run()
    finally:
        camera.stop()
        os.close(reader)  # the stuck write fails now, and the sender ends
    for thread in threading.enumerate():
        if thread.name == "streamseg-stream-send":
            thread.join(timeout=10)
            assert not thread.is_alive()
    _assert_recorded_throughout(recorded)
    assert "frames left out while the server was slow" in caplog.text
    assert "the server is not taking the stream; leaving it" in caplog.text


@needs_rtsp
def test_a_camera_published_to_a_server_that_stops_reading_is_sent_again_on_a_new_connection(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A server that stops reading (or a network path gone silent: TCP gives up after many minutes) held a
    camera's stream for ever. After STALL_TIMEOUT_S without taking a frame, the connection counts as lost:
    the sender held in its write is left behind, and a new connection carries the stream on. Two are left
    behind at most (a server that reads no connection would otherwise hold a thread each); the one sending
    then waits, until the server lets go of its connections (here: it closes them) and reads again."""
    from streamseg.sinks import stream
    from streamseg.sinks.video import VideoSink
    from streamseg.sources.live import LIVE_TIME_BASE

    monkeypatch.setattr(stream, "STALL_TIMEOUT_S", 1.0)
    camera = RtspServer("cam:15").start()
    lost = "connection lost (the server has taken nothing for 1 s)"
    caplog.set_level(logging.WARNING, logger="streamseg")
    senders, capped_at = 0, None
    with SilentServer() as server:
        url = f"tcp://127.0.0.1:{server.port}?send_buffer_size=4096"  # FFmpeg's buffer fills at once too
        sink = stream.StreamSink(url, pace=False, open_video=lambda: VideoSink(
            url, time_base=LIVE_TIME_BASE, crf=0, preset="ultrafast", low_latency=True, rebase=True,
            open_args={"format": "mpegts"}))
        try:
            with Pipeline(_config([camera.url("cam")], tiny_model), sinks=[sink]) as pipeline:
                started = time.monotonic()
                for _ in pipeline.results():
                    senders = max(senders, sum(t.name == "streamseg-stream-send" for t in threading.enumerate()))
                    if capped_at is None and caplog.text.count(lost) == 2:
                        capped_at = time.monotonic()
                    elif capped_at is not None and time.monotonic() - capped_at > 4 and not server.reading.is_set():
                        assert caplog.text.count(lost) == 2 and senders == 3  # the two left, the one held now
                        server.release()  # reads from now on; the held connections close, and their senders end
                    if server.received > 100_000 or time.monotonic() - started > 60:
                        break
        finally:
            camera.stop()
    assert server.received > 100_000, caplog.text  # lossless 320x180 frames, a few dozen KB each
    assert caplog.text.count(lost) == 2 and caplog.text.count("streaming again") == 3, caplog.text


def test_a_file_published_to_a_server_that_stops_reading_fails_the_run_in_time(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A file's frames wait for the stream's sender, never dropped; a server that stops reading, where nothing
    times the write out (RTMP), held the whole run for ever. After STALL_TIMEOUT_S without room the run fails
    with one line, and the recording is finished with what was done. The server here is a FIFO whose reader
    never reads: it takes 64 KiB, then blocks."""
    from streamseg import SinkError
    from streamseg.sinks import stream
    from streamseg.sinks.video import VideoSink

    monkeypatch.setattr(stream, "STALL_TIMEOUT_S", 2.0)
    fifo = tmp_path / "stream.ts"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, never reading
    src = write_clip(tmp_path / "in.mp4", frames=150)  # 5 s, sent at its own speed
    recorded = tmp_path / "rec.mp4"
    with av.open(str(src)) as container:
        time_base = container.streams.video[0].time_base
    stuck = stream.StreamSink(str(fifo), pace=True, open_video=lambda: VideoSink(
        fifo, time_base=time_base, crf=0, preset="ultrafast", low_latency=True,
        open_args={"format": "mpegts"}))
    caplog.set_level(logging.WARNING, logger="streamseg")
    started = time.monotonic()
    try:
        cfg = _config([str(src)], tiny_model, output__video=str(recorded))
        with pytest.raises(SinkError, match="the server has taken nothing for 2 s"), \
                Pipeline(cfg, sinks=[stuck]) as pipeline:
            pipeline.run()
        took = time.monotonic() - started
    finally:
        os.close(reader)  # the stuck write fails now, and the sender ends
    for thread in threading.enumerate():
        if thread.name == "streamseg-stream-send":
            thread.join(timeout=10)
            assert not thread.is_alive()
    assert took < 30, took  # not the 5 s clip sent whole, nor held for ever
    assert "the server is not taking the stream; leaving it" in caplog.text
    assert 0 < len(read_video(recorded)[0]) < 150  # what was done, in a file that plays


def _packets(path: Path) -> dict[str, list[float]]:
    """Each kind of stream's packet times, in seconds."""
    times: dict[str, list[float]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.dts is not None:
                times.setdefault(packet.stream.type, []).append(float(packet.pts * packet.time_base))
    return times


@needs_rtmp
def test_a_file_and_its_sound_are_published_over_rtmp(tmp_path: Path, tiny_model: Path) -> None:
    """RTMP, as YouTube, Twitch and nginx-rtmp take it (FLV): every frame, at the file's own speed, and the
    sound over the picture's 2 s. The server here is nginx's RTMP module, which records what it gets."""
    src = write_clip(tmp_path / "in.mp4", frames=60, audio=True)
    server = RtmpServer(tmp_path / "rtmp").start()
    try:
        proc = run_cli("segment", str(src), "--model", str(tiny_model), "--stream", server.url("cam"))
    finally:
        server.stop()
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    got = _packets(server.recording("cam"))
    assert len(got["video"]) == 60 and 1.9 < got["video"][-1] < 2.0
    assert got["audio"][0] < 0.05 and 1.9 < got["audio"][-1] < 2.1, got["audio"]


@needs_rtsp
def test_a_server_that_refuses_the_stream_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    """Publishing to a path the server does not have cannot work on any retry: exit 5, one line."""
    server = RtspServer(f"out:record={tmp_path / 'got.mkv'}").start()
    try:
        proc = run_cli("segment", str(write_clip(tmp_path / "in.mp4", frames=20)), "--model", str(tiny_model),
                       "--stream", server.url("no-such-path"))
    finally:
        server.stop()
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 5 and len(errors) == 1, proc.stderr
    assert "no-such-path: cannot publish" in errors[0] and "Traceback" not in proc.stderr


def test_a_protocol_this_ffmpeg_lacks_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    """PyPI's PyAV has no SRT: said in one line, not retried for as long as the run lasts."""
    import av

    try:
        av.open("srt://127.0.0.1:9/x", "w", format="mpegts").start_encoding()
    except av.error.ProtocolNotFoundError:
        pass
    except (av.FFmpegError, OSError, ValueError):
        pytest.skip("this FFmpeg has SRT")
    proc = run_cli("segment", str(write_clip(tmp_path / "in.mp4", frames=4)), "--model", str(tiny_model),
                   "--stream", "srt://127.0.0.1:9000")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 5 and errors == ["error: srt://127.0.0.1:9000: this FFmpeg cannot publish srt:// "
                                               "(built without it); use rtsp://, rtmp:// or udp://"], proc.stderr
