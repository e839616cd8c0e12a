"""Memory over a long run: the RSS slope of the whole pipeline, file in → video + JSONL out.

Run by hand:
    python benchmarks/soak.py --minutes 10 --model sample --size 640x360

A clip long enough to outlast the run is generated (60 rendered frames, looped, so it is quick to
make); the pipeline runs until ``--minutes`` have passed; RSS is sampled every few seconds. The slope
is fitted by least squares after the first minute (allocator and caches warming up).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import build_model, make_clip  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="sample")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps-guess", type=float, default=30.0, help="to size the clip so it outlasts the run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trace", help="also write every (seconds, RSS MB) sample to this CSV file")
    args = parser.parse_args()

    from streamseg import Pipeline, load_config

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.model, Path(tmp) / "model")
        frames = int(args.minutes * 60 * args.fps_guess * 1.5)
        clip = make_clip(Path(tmp) / "long.mp4", width, height, frames)
        cfg = load_config(None, sources=(str(clip),), model__name=str(model), model__device=args.device,
                          output__video=str(Path(tmp) / "out.mp4"), output__masks=str(Path(tmp) / "out.jsonl"))
        samples: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not done.wait(5.0):
                samples.append((time.monotonic() - start, rss_mb()))

        sampler = threading.Thread(target=sample, name="rss-sampler")
        sampler.start()
        count = 0
        start = time.monotonic()
        with Pipeline(cfg) as pipeline:
            for _ in pipeline.results():
                count += 1
                if time.monotonic() - start > args.minutes * 60:
                    pipeline.stop()
        done.set()
        sampler.join()
    if args.trace:
        Path(args.trace).write_text("seconds,rss_mb\n" + "".join(f"{t:.1f},{m:.1f}\n" for t, m in samples))
    t = np.array([s[0] for s in samples if s[0] > 60])
    m = np.array([s[1] for s in samples if s[0] > 60])
    slope = np.polyfit(t / 60, m, 1)[0] if len(t) > 2 else float("nan")
    print(f"{count} frames in {time.monotonic() - start:.0f} s; RSS {samples[0][1]:.0f} MB at 5 s, "
          f"{m.min():.0f}-{m.max():.0f} MB after 1 min; slope {slope:+.2f} MB/min over {len(t)} samples")


if __name__ == "__main__":
    main()
