"""A video piped into standard input (source ``-``), as from ``ffmpeg ... -f mpegts - | streamseg segment -``."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import av
import pytest

from .conftest import ROOT, SAMPLE_CLIP, RtspServer, needs_rtsp, read_video, write_clip


def _cli(*args: str, stdin=None, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "streamseg", "segment", *args], cwd=ROOT, stdin=stdin, input=input,
                          capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _streams(path: Path) -> dict[str, tuple[int, float]]:
    """Each stream's kind: (packets, seconds from its first packet to its last one's end)."""
    with av.open(str(path)) as container:
        packets: dict[str, list[av.Packet]] = {}
        for packet in container.demux():
            if packet.dts is not None:
                packets.setdefault(packet.stream.type, []).append(packet)
        return {kind: (len(ps), float((ps[-1].pts + ps[-1].duration - ps[0].pts) * ps[0].time_base))
                for kind, ps in packets.items()}


def test_a_piped_video_gives_what_the_same_file_gives(tmp_path: Path, tiny_model: Path) -> None:
    """Every frame, the same masks at the same timestamps, and the sound copied: a pipe is read once, so its
    sound comes from the same reading as its frames."""
    src = write_clip(tmp_path / "in.ts", frames=24, audio=True)
    common = ["--model", str(tiny_model), "--threshold", "0.0", "--preset", "ultrafast"]
    as_file = _cli(str(src), "-o", str(tmp_path / "f.mp4"), "--save-masks", str(tmp_path / "f.jsonl"), *common)
    assert as_file.returncode == 0, as_file.stderr
    piped = _cli("-", "-o", str(tmp_path / "p.mp4"), "--save-masks", str(tmp_path / "p.jsonl"), *common,
                 input=src.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert "Traceback" not in piped.stderr and "-> " in piped.stderr
    file_records, pipe_records = _records(tmp_path / "f.jsonl"), _records(tmp_path / "p.jsonl")
    assert len(pipe_records) == 24
    assert {r["source"] for r in pipe_records} == {"stdin"}
    assert [{**r, "source": ""} for r in pipe_records] == [{**r, "source": ""} for r in file_records]
    assert read_video(tmp_path / "p.mp4")[0] == read_video(tmp_path / "f.mp4")[0]
    streams = _streams(tmp_path / "p.mp4")
    assert set(streams) == {"video", "audio"}
    assert streams == _streams(tmp_path / "f.mp4")


@needs_rtsp
def test_a_piped_videos_sound_is_published_and_recorded_alike(tmp_path: Path, tiny_model: Path) -> None:
    """Piped in and sent on (``ffmpeg ... - | streamseg segment - --stream URL -o file``): the stream and the
    file each get the whole sound, from the one reading of the pipe."""
    src = write_clip(tmp_path / "in.ts", frames=60, audio=True)
    received, recorded = tmp_path / "got.mkv", tmp_path / "o.mp4"
    server = RtspServer(f"out:record-av={received}").start()
    try:
        proc = _cli("-", "-o", str(recorded), "--stream", server.url("out"), "--model", str(tiny_model),
                    input=src.read_bytes())
        server.wait_written()
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert 2.45 <= _streams(recorded)["audio"][1] <= 2.6  # all of the sound: it runs 0.5 s past the picture
    assert len(read_video(received)[2]) == 60
    # The sound up to the picture's end, counted in AAC frames (1024 samples at 48 kHz): the server stamps
    # what it receives as it comes, so on a loaded machine the span it records stretches.
    count, seconds = _streams(received)["audio"]
    assert 1.8 <= count * 1024 / 48000 <= 2.1, (count, seconds)


def test_standard_input_that_is_a_file_is_read_as_that_file(tmp_path: Path, tiny_model: Path) -> None:
    """``< clip.mp4``: an MP4 whose index is at its end, which a pipe could not carry, reads like the file."""
    src = write_clip(tmp_path / "in.mp4", frames=10, audio=True)
    with src.open("rb") as stdin:
        proc = _cli("-", "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model), stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert len(read_video(tmp_path / "o.mp4")[2]) == 10
    assert "audio" in _streams(tmp_path / "o.mp4")


@pytest.mark.parametrize("case", ["mp4", "noise", "empty"])
def test_what_a_pipe_cannot_carry_is_one_line(tmp_path: Path, tiny_model: Path, case: str) -> None:
    if case == "mp4":  # not fragmented, with its index at the end: FFmpeg would seek back to the frames
        data = SAMPLE_CLIP.read_bytes()
    else:
        data = bytes(range(256)) * 400 if case == "noise" else b""
    proc = _cli("-", "-o", str(tmp_path / "o.mp4"), "--model", str(tiny_model), input=data)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 3 and len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: -: ") and "fragmented" in errors[0]
    assert "Traceback" not in proc.stderr


def test_two_sources_cannot_both_read_standard_input(tmp_path: Path) -> None:
    proc = _cli("-", "pipe:", "-o", str(tmp_path / "o.mp4"), input=b"")
    assert proc.returncode == 2 and "error: sources: standard input (-) can be read by one source only" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_ends_a_run_whose_writer_has_gone_quiet(tmp_path: Path, tiny_model: Path) -> None:
    """A writer that stops sending but keeps the pipe open (a paused download, a stalled tool) does not
    hold the run: Ctrl-C finishes the outputs with what came, at once."""
    src = write_clip(tmp_path / "in.ts", frames=30, audio=True)
    out, masks = tmp_path / "o.mp4", tmp_path / "m.jsonl"
    read_end, write_end = os.pipe()  # the test holds the writing end open: no end of input comes
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", "segment", "-", "-o", str(out), "--save-masks",
                             str(masks), "--model", str(tiny_model)], cwd=ROOT, stdin=read_end, stderr=subprocess.PIPE)
    os.close(read_end)
    try:
        os.write(write_end, src.read_bytes())
        # Until what came is done: 20 results or more, and none for 2 s. The count must be reached first: a
        # test process starved for 2 s (a loaded CI machine) once sent the signal while the run was starting.
        deadline, seen, changed = time.monotonic() + 120, 0, time.monotonic()
        while seen < 20 or time.monotonic() - changed < 2:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"only {seen} results after 120 s"
            done = len(masks.read_text().splitlines()) if masks.exists() else 0
            if done != seen:
                seen, changed = done, time.monotonic()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        proc.kill()
        os.close(write_end)
    text = f"{stderr.decode()}(Ctrl-C sent with {seen} results written, answered in {waited:.1f} s)"
    assert proc.returncode == 130, text
    assert "stopped early" in text and "did not stop" not in text and "Traceback" not in text
    assert waited < 8, text  # not the threads' 10 s join timeout
    frames = len(read_video(out)[2])
    assert frames == len(_records(masks)) >= 20
    assert "audio" in _streams(out)


def _unread(fd: int) -> int:
    """Bytes waiting in a pipe, not yet read."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


@pytest.mark.slow
def test_ctrl_c_while_the_piped_video_is_opened_ends_the_run(tmp_path: Path, tiny_model: Path) -> None:
    """A writer that sent only the start of a video, then stalled: Ctrl-C while FFmpeg waits for the rest
    to open it ends the run (PyAV drops an interrupt raised inside its read, which left the run waiting)."""
    src = write_clip(tmp_path / "in.ts", frames=30, audio=True)
    read_end, write_end = os.pipe()  # both held by the test: no end of input comes, and what waits is seen
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", "segment", "-", "-o", str(tmp_path / "o.mp4"),
                             "--model", str(tiny_model)], cwd=ROOT, stdin=read_end, stderr=subprocess.PIPE)
    try:
        os.write(write_end, src.read_bytes()[:6000])  # less than FFmpeg needs to open it
        deadline = time.monotonic() + 120
        while _unread(read_end):  # read by FFmpeg, which now waits for more
            assert proc.poll() is None and time.monotonic() < deadline, "the video's start was not read"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        os.close(read_end)
        os.close(write_end)
    # The first Ctrl-C stops the run, as it does once frames flow: nothing was done, and nothing is lost.
    assert proc.returncode == 130 and "stopped early: 0 frames" in stderr.decode(), stderr.decode()
    assert "Traceback" not in stderr.decode()


# -- named pipes (mkfifo): read once, as standard input is, but their writer may come later -------------

def test_a_named_pipe_is_read_like_standard_input(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.ts", frames=20, audio=True)
    fifo, out, masks = tmp_path / "cam.fifo", tmp_path / "o.mp4", tmp_path / "m.jsonl"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"sleep 1; cat {src} > {fifo}"])  # comes after the reader
    try:
        proc = _cli(str(fifo), "-o", str(out), "--save-masks", str(masks), "--model", str(tiny_model), timeout=120)
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 0, proc.stderr
    assert len(read_video(out)[2]) == len(_records(masks)) == 20
    assert "audio" in _streams(out)


def test_a_named_pipe_no_writer_comes_to_ends_at_the_duration(tmp_path: Path, tiny_model: Path) -> None:
    """It used to wait in open(2) for ever, out of reach of --duration."""
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    proc = _cli(str(fifo), "--save-masks", str(tmp_path / "m.jsonl"), "--model", str(tiny_model), "--duration", "2",
                timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {fifo}: nothing came (no writer)", proc.stderr


def test_sigterm_while_a_named_pipe_waits_for_its_writer_ends_the_run(tmp_path: Path, tiny_model: Path) -> None:
    """It used to end the process outright (rc -15): the signal came before the run had its handlers."""
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", "segment", str(fifo), "--save-masks",
                             str(tmp_path / "m.jsonl"), "--model", str(tiny_model)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # the model loaded, the pipe opened, waiting
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped early: 0 frames" in stderr and "Traceback" not in stderr


def test_a_named_pipe_whose_writer_pauses_ends_at_the_duration(tmp_path: Path, tiny_model: Path) -> None:
    """A writer that sends a clip and then holds the pipe open: the frames that came are done, and the run
    ends at --duration as a run that succeeded (it used to end in an error with an empty reason, and then to
    wait, still probing the stream, until the writer went away: a minute here, well past the timeout)."""
    src = write_clip(tmp_path / "in.ts", frames=20)
    fifo, masks = tmp_path / "cam.fifo", tmp_path / "m.jsonl"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"exec 3>{fifo}; cat {src} >&3; sleep 60"])
    try:
        proc = _cli(str(fifo), "--save-masks", str(masks), "--model", str(tiny_model), "--duration", "6",
                    timeout=45)
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    assert 1 <= len(_records(masks)) <= 20
