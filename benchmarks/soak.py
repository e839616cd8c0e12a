"""Memory over a long run: the RSS slope of the whole pipeline, file in → video + JSONL out.

Run by hand:
    python benchmarks/soak.py --minutes 10 --model sample --size 640x360
    python benchmarks/soak.py --minutes 10 --model sample --live 15

A clip long enough to outlast the run is generated (60 rendered frames, looped, so it is quick to
make); the pipeline runs until ``--minutes`` have passed; RSS is sampled every few seconds. The slope
is fitted by least squares after the first minute (allocator and caches warming up).

``--live SECONDS`` reads a camera instead: GStreamer's RTSP server (streamseg/testing/rtsp_server.py, Debian's
python3-gi), killed and started again every SECONDS, recorded in 60 s segments + JSONL of which the
newest 3 are kept, so that every reconnect path runs many times. Open file descriptors and threads are sampled too: a camera that
drops a hundred times a day must not leak either.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import build_model, make_clip


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


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
    parser.add_argument("--live", type=float, metavar="SECONDS",
                        help="read an RTSP camera that is killed and restarted every SECONDS instead of a file")
    args = parser.parse_args()

    from streamseg import Pipeline, load_config

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.model, Path(tmp) / "model")
        outputs = {"output__video": str(Path(tmp) / "out.mp4"), "output__masks": str(Path(tmp) / "out.jsonl")}
        camera, restarts = None, 0
        if args.live:
            from streamseg.testing.cameras import RtspServer

            camera = RtspServer("cam:15").start()
            cfg = load_config(None, sources=(camera.url("cam"),), model__name=str(model), model__device=args.device,
                              output__segment_time=60.0, output__keep_segments=3, live__stall_timeout_s=2.0,
                              live__reconnect_initial_s=0.2,
                              live__reconnect_max_s=1.0, live__stats_interval_s=0.0, **outputs)
        else:
            frames = int(args.minutes * 60 * args.fps_guess * 1.5)
            clip = make_clip(Path(tmp) / "long.mp4", width, height, frames)
            cfg = load_config(None, sources=(str(clip),), model__name=str(model), model__device=args.device,
                              **outputs)
        samples: list[tuple[float, float, int, int]] = []  # seconds, RSS MB, open fds, threads
        done = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not done.wait(5.0):
                samples.append((time.monotonic() - start, rss_mb(), open_fds(), threading.active_count()))

        def restart() -> None:  # the camera drops: its server dies, and comes back a second later
            nonlocal restarts
            while not done.wait(args.live):
                camera.stop()
                time.sleep(1.0)
                camera.start()
                restarts += 1

        helpers = [threading.Thread(target=sample, name="rss-sampler")]
        helpers += [threading.Thread(target=restart, name="camera-restarts")] if camera else []
        for helper in helpers:
            helper.start()
        count = 0
        start = time.monotonic()
        try:
            with Pipeline(cfg) as pipeline:
                for _ in pipeline.results():
                    count += 1
                    if time.monotonic() - start > args.minutes * 60:
                        pipeline.stop()
        finally:
            done.set()
            for helper in helpers:
                helper.join()
            if camera:
                camera.stop()
        recorded = f"{len(list(Path(tmp).glob('out-*.mp4')))} recordings and {len(list(Path(tmp).glob('out-*.jsonl')))}"
    if args.trace:
        Path(args.trace).write_text("seconds,rss_mb,open_fds,threads\n"
                                    + "".join(f"{t:.1f},{m:.1f},{f},{n}\n" for t, m, f, n in samples))
    late = [s for s in samples if s[0] > 60]
    t = np.array([s[0] for s in late])
    m = np.array([s[1] for s in late])
    slope = np.polyfit(t / 60, m, 1)[0] if len(t) > 2 else float("nan")
    print(f"{count} frames in {time.monotonic() - start:.0f} s; RSS {samples[0][1]:.0f} MB at 5 s, "
          f"{m.min():.0f}-{m.max():.0f} MB after 1 min; slope {slope:+.2f} MB/min over {len(t)} samples")
    print(f"open files {late[0][2]}-{max(s[2] for s in late)} (last {late[-1][2]}), threads {late[0][3]}-"
          f"{max(s[3] for s in late)} (last {late[-1][3]}) after 1 min"
          + (f"; camera restarted {restarts} times; {recorded} mask files left" if camera else ""))


if __name__ == "__main__":
    main()
