"""Decoding a video piped into standard input against decoding the same file, side by side.

A pipe is read through a Python object that polls the run's stop event (see streamseg/sources/pipe.py),
where a file is read by FFmpeg itself; this measures what that costs at a high bitrate. Each round
decodes the clip both ways, in fresh processes, one after the other:

    python benchmarks/pipe_read.py --size 1920x1080 --frames 120 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _write(path: Path, width: int, height: int, frames: int) -> None:
    """Noise that scrolls, nearly losslessly: a bitrate far above a camera's, where reading costs most."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 7, 1), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _child(how: str, path: str) -> None:
    from streamseg.sources.file import read_frames
    from streamseg.sources.pipe import PipedVideo

    started = time.perf_counter()
    if how == "file":
        count = sum(1 for _ in read_frames(path, threads=1))
    else:
        pipe = PipedVideo(threading.Event(), audio=False)
        pipe.probe(threads=1)
        count = sum(1 for _ in pipe.frames("stdin"))
        pipe.close()
    print(count / (time.perf_counter() - started))


def _run(how: str, path: Path) -> float:
    cmd = [sys.executable, __file__, "--child", how, str(path)]
    if how == "file":
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    else:
        with path.open("rb") as data:
            feeder = subprocess.Popen(["cat"], stdin=data, stdout=subprocess.PIPE)
            done = subprocess.run(cmd, stdin=feeder.stdout, capture_output=True, text=True, check=True)
            feeder.wait()
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.ts"
        _write(clip, width, height, args.frames)
        mbps = clip.stat().st_size * 8 / (args.frames / 30) / 1e6
        print(f"{args.size}, {args.frames} frames, {mbps:.0f} Mbit/s, decoded to RGB on one thread")
        ratios = []
        for k in range(args.rounds):
            file_fps, pipe_fps = _run("file", clip), _run("pipe", clip)
            ratios.append(pipe_fps / file_fps)
            print(f"round {k + 1}: file {file_fps:.1f} fps, pipe {pipe_fps:.1f} fps, pipe/file {ratios[-1]:.2f}")
        print(f"pipe/file, median of {args.rounds}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
