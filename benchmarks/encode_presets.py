"""libx264's speed presets side by side: what `--preset` trades, frames per second against file size.

On a GPU machine without NVENC (H100, A100) the annotated video is encoded by libx264 on the host,
and that binds the pipeline (benchmarks/RESULTS.md). Run by hand:

    python benchmarks/encode_presets.py --size 1280x720 --rounds 2

Encodes the same synthetic frames with each preset, alternating them over the rounds; prints fps,
CPU milliseconds a frame (all of x264's threads), the milliseconds a frame the caller waits in
``encode`` (what holds up streamseg's output thread) and KiB a frame. ``--slices`` adds veryfast with
PyAV's default threading, slices of one frame at a time, against the frame threads VideoSink uses.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamseg.testing.synthetic import Scene


def encode(frames: list[av.VideoFrame], preset: str, crf: int, repeat: int, thread_type: str) -> dict:
    width, height = frames[0].width, frames[0].height
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_type = thread_type
        start, cpu = time.perf_counter(), os.times()
        count, waited = 0, 0.0
        for _ in range(repeat):
            for frame in frames:
                frame.pts = count
                count += 1
                clock = time.perf_counter()
                packets = stream.encode(frame)
                waited += time.perf_counter() - clock
                out.mux(packets)
        out.mux(stream.encode(None))
        seconds, end_cpu = time.perf_counter() - start, os.times()
    cpu_s = end_cpu.user + end_cpu.system - cpu.user - cpu.system
    return {"fps": count / seconds, "cpu_ms": 1000 * cpu_s / count, "wait_ms": 1000 * waited / count,
            "kib": len(buffer.getvalue()) / count / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--presets", default="veryfast,superfast,ultrafast")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--slices", action="store_true", help="add veryfast with PyAV's default slice threads")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    scene = Scene(11, aspect=width / height)
    frames = [av.VideoFrame.from_ndarray(scene.render(i, width, height)[0], format="rgb24").reformat(format="yuv420p")
              for i in range(0, 120, 2)]
    runs: dict[tuple[str, str], list[dict]] = {(p, "AUTO"): [] for p in args.presets.split(",")}
    if args.slices:
        runs["veryfast", "SLICE"] = []
    for i in range(args.rounds):
        for (preset, thread_type), results in runs.items():
            results.append(encode(frames, preset, args.crf, repeat=4, thread_type=thread_type))
            print(f"round {i + 1} {preset} {thread_type}: {results[-1]['fps']:.1f} fps", flush=True)
    print(f"\nlibx264 {args.size} crf={args.crf}, {len(frames) * 4} frames a run, {os.cpu_count()} cores, "
          f"PyAV {av.__version__}")
    print(f"{'preset':<10} {'threads':<8} {'fps':>8} {'CPU ms/frame':>13} {'wait ms/frame':>14} {'KiB/frame':>10}")
    for (preset, thread_type), results in runs.items():
        fps, cpu, wait, kib = (statistics.median(r[k] for r in results) for k in ("fps", "cpu_ms", "wait_ms", "kib"))
        kind = "slices" if thread_type == "SLICE" else "frames"
        print(f"{preset:<10} {kind:<8} {fps:8.1f} {cpu:13.2f} {wait:14.2f} {kib:10.1f}")


if __name__ == "__main__":
    main()
