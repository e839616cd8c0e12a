"""A run killed outright (SIGKILL: the OOM killer, a power cut) leaves its recording playable up to its
last 2 seconds: MP4 is written in fragments, Matroska in clusters, each out to the file at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from .conftest import ROOT, RtspServer, needs_rtsp, write_clip

FPS = 30
CRASH_LOSS_S = 2.0


def _decodable(path: Path) -> list[float]:
    """The times of the frames a player gets from a file, reading up to where it stops."""
    times = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                times.append(float(frame.pts * frame.time_base))
        except av.FFmpegError:  # the torn end of a killed file: what came before it counts
            pass
    return times


def _records(folder: Path, pattern: str) -> int:
    """Complete JSON lines in the masks file(s) matching ``pattern``."""
    return sum(1 for path in folder.glob(pattern) for line in path.read_text().splitlines()
               if line.endswith("}") and json.loads(line))


def _run_and_kill(args: list[str], folder: Path, masks: str, records: int) -> int:
    """Start a run, SIGKILL it once ``records`` results are in its masks; the results written by then."""
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", "segment", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _records(folder, masks) < records:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "too slow to reach the kill"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return _records(folder, masks)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_a_killed_file_run_keeps_all_but_its_last_seconds(tmp_path: Path, tiny_model: Path, suffix: str) -> None:
    src = write_clip(tmp_path / "long.mp4", width=160, height=96, frames=40 * FPS, audio=True)
    out, masks = tmp_path / f"out{suffix}", tmp_path / "m.jsonl"
    done = _run_and_kill([str(src), "-o", str(out), "--save-masks", str(masks), "--model", str(tiny_model),
                          "--batch-size", "1"], tmp_path, masks.name, records=6 * FPS)
    assert done < 40 * FPS  # killed mid-run
    times = _decodable(out)
    assert times, f"nothing playable in the {out.stat().st_size}-byte file"
    assert times[-1] >= done / FPS - CRASH_LOSS_S - 1 / FPS, (times[-1], done)
    assert times == sorted(times) and times[0] < 0.05  # from the start (Matroska shifts by the AAC priming)


@pytest.mark.slow
@needs_rtsp
def test_a_killed_live_recording_keeps_its_current_segment(tmp_path: Path, tiny_model: Path) -> None:
    camera = RtspServer("cam:15").start()
    try:
        done = _run_and_kill([camera.url("cam"), "-o", str(tmp_path / "rec.mp4"), "--save-masks",
                              str(tmp_path / "m.jsonl"), "--model", str(tiny_model), "--segment-time", "600"],
                             tmp_path, "m-*.jsonl", records=6 * 15)
    finally:
        camera.stop()
    (recording,) = tmp_path.glob("rec-*.mp4")
    times = _decodable(recording)
    assert times, f"nothing playable in the {recording.stat().st_size}-byte segment"
    assert times[-1] - times[0] >= done / 15 - CRASH_LOSS_S - 0.5, (times[-1] - times[0], done)
