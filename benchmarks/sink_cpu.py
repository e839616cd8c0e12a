"""The video output's own CPU time a frame, with its images copied into FFmpeg's frames or shared.

On a GPU the pipeline's threads together hold the interpreter lock most of the time (benchmarks/
RESULTS.md): what the output thread spends a frame, outside the encoder's own threads, counts. Run by hand:

    python benchmarks/sink_cpu.py --size 1280x720 --rounds 3

Writes the same drawn frames (YUV 4:2:0 as a GPU hands them on, and RGB as a CPU run does) with
libx264 ultrafast, so that little of x264's work lands on the calling thread; copying is forced by
hiding PyAV's zero-copy constructor, as on PyAV before 12. Alternates the two, prints medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamseg.inference.color import rgb_to_yuv420
from streamseg.sinks.video import VideoSink
from streamseg.testing.synthetic import Scene
from streamseg.types import Frame, FrameResult, Segmentation


def write_ms(images: list[np.ndarray], layout: str, shared: bool, folder: Path, frames: int = 120) -> float:
    """The calling thread's CPU milliseconds a frame in VideoSink.write."""
    share = av.VideoFrame.from_numpy_buffer
    if not shared:
        del av.VideoFrame.from_numpy_buffer
    try:
        height, width = images[0].shape[:2] if layout == "rgb24" else (images[0].shape[0] * 2 // 3, images[0].shape[1])
        spent = 0.0
        with VideoSink(folder / "out.mp4", time_base=Fraction(1, 30), preset="ultrafast") as sink:
            for i in range(frames):
                frame = Frame(pixels=np.zeros((height, width, 3), np.uint8), index=i, pts=i,
                              time_base=Fraction(1, 30), time=i / 30)
                empty = Segmentation("panoptic", [], [], [], [], [], size=(height, width))
                result = FrameResult(frame, empty, images[i % len(images)].copy(), drawn_format=layout)
                start = time.thread_time()
                sink.write(result)
                spent += time.thread_time() - start
        return 1000 * spent / frames
    finally:
        av.VideoFrame.from_numpy_buffer = share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    scene = Scene(11, aspect=width / height)
    rgb = [scene.render(i, width, height)[0] for i in range(0, 60, 2)]
    yuv = [rgb_to_yuv420(torch.from_numpy(image)[None])[0].numpy() for image in rgb]
    with tempfile.TemporaryDirectory() as tmp:
        for layout, images in (("yuv420p", yuv), ("rgb24", rgb)):
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for shared in (False, True):
                    times[shared].append(write_ms(images, layout, shared, Path(tmp)))
            print(f"{layout} {args.size}: copied {statistics.median(times[False]):.2f} ms, "
                  f"shared {statistics.median(times[True]):.2f} ms of the output thread's CPU a frame "
                  f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
