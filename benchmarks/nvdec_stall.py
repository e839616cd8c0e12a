"""Does NVDEC's copy to the host wait for other work on CUDA's default stream, holding the interpreter lock?

FFmpeg synchronizes the default stream for each frame it copies to the host (``hwcontext_cuda.c``),
and PyAV 18 makes that copy with the interpreter lock held. If so, a model queued on the default
stream stalls decoding and, through the lock, every Python thread; on a stream of its own (what
streamseg's runner does now) it should not. Needs CUDA. Run by hand (gpu_check.sh runs it):

    python benchmarks/nvdec_stall.py --clip video.mp4 --frames 240

Decodes the same frames with NVDEC (as streamseg's sources do) three times, side by side: with the
GPU otherwise idle, with a background thread keeping ~10 ms of matrix products queued on the default
stream, and with the same products on a stream of their own. Prints decode fps and how long a third
thread waits for the interpreter lock on waking (its 5 ms sleeps overrun).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamseg.sources import read_frames


def busy_gpu(stream: torch.cuda.Stream | None, stop: threading.Event) -> None:
    """Keep about ten milliseconds of work queued on ``stream`` (None: the default stream)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    with torch.cuda.stream(stream or torch.cuda.default_stream()):
        while not stop.is_set():
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.current_stream().synchronize()


def lock_waits(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        time.sleep(0.005)
        out.append(time.perf_counter() - start - 0.005)


def decode(clip: str, frames: int, load: str) -> tuple[float, float]:
    stop, waits = threading.Event(), []
    threads = [threading.Thread(target=lock_waits, args=(stop, waits))]
    if load != "idle":
        stream = torch.cuda.Stream() if load == "side stream" else None
        threads.append(threading.Thread(target=busy_gpu, args=(stream, stop)))
    for t in threads:
        t.start()
    time.sleep(0.5)  # the load is running
    count, start = 0, time.perf_counter()
    for _ in read_frames(clip, hwaccel="cuda", yuv=True):
        count += 1
        if count == frames:
            break
    seconds = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    return count / seconds, 1000 * statistics.mean(waits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True)
    parser.add_argument("--frames", type=int, default=240)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA")
    torch.cuda.init()
    decode(args.clip, 20, "idle")  # NVDEC, the CUDA context and the kernels set up
    print(f"{'GPU load':<14} {'decode fps':>10} {'lock wait ms':>13}")
    for load in ("idle", "default stream", "side stream"):
        fps, wait = decode(args.clip, args.frames, load)
        print(f"{load:<14} {fps:10.1f} {wait:13.2f}", flush=True)


if __name__ == "__main__":
    main()
