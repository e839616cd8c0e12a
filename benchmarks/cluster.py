"""Many files on Ray workers, side by side with the plain CLI (``bench.py cluster``):

    python benchmarks/bench.py cluster --files 8 --size 640x360 --frames 90 --rounds 2

Each round runs, one after the other and each in a process of its own, the same N synthetic clips through:
(1) ``plain``: the CLI in one process (``-o OUTDIR/``), pinned to one core (``taskset -c 0``, one torch
    thread): one worker's worth of machine, without Ray;
(2) ``ray1``: ``--cluster local --workers 1`` pinned to the same one core;
(3) ``ray2``: ``--cluster local --workers 2`` on two cores (``taskset -c 0,1``), a CPU each.
Everything is timed, from the command's start to its exit: Ray's start, the workers' model loading, the
outputs' closing. Reported: the scaling of ray2 over ray1 (target >= 1.8x), what Ray adds an input over the
plain CLI ((ray1 - plain) / N, target < max(1 s, 5% of an input)), and the driver's peak memory (the
``streamseg`` process, sampled from /proc; Ray's own daemons are not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, provenance

RUNS = {"plain": ("0", []), "ray1": ("0", ["--cluster", "local", "--workers", "1"]),
        "ray2": ("0,1", ["--cluster", "local", "--workers", "2"])}


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_once(name: str, clips: Path, work: Path, model: str) -> dict:
    cores, extra = RUNS[name]
    out = work / name
    cmd = ["taskset", "-c", cores, sys.executable, "-m", "streamseg", "segment", str(clips), "-o", f"{out}/",
           "--save-masks", f"{out}/", "--config", str(ROOT / "configs" / "sample.yaml"), "--model", model,
           "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _rss_kb(proc.pid))
        time.sleep(0.1)
    wall = time.monotonic() - started
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{stderr[-2000:]}")
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    subprocess.run(["rm", "-rf", str(out)], check=True)
    span = max(m["started"] + m["seconds"] for m in manifest) - min(m["started"] for m in manifest)
    return {"wall_s": round(wall, 2), "inputs_s": round(sum(m["seconds"] for m in manifest), 2),
            "span_s": round(span, 2),
            "frames": sum(m["frames"] for m in manifest), "driver_peak_rss_mb": round(peak / 1024, 1),
            "workers": sorted({m["worker"] for m in manifest})}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT of the clips")
    parser.add_argument("--frames", type=int, default=90, help="frames a clip")
    parser.add_argument("--model", default=str(ROOT / "samples" / "model"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cpu-cluster.json"))
    args = parser.parse_args(argv)
    from bench import make_clip

    width, height = map(int, args.size.split("x"))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        clips.mkdir()
        for n in range(args.files):
            make_clip(clips / f"clip{n}.mp4", width, height, args.frames)
        for k in range(args.rounds):
            order = list(RUNS) if k % 2 == 0 else list(reversed(RUNS))
            rounds.append({name: run_once(name, clips, Path(tmp), args.model) for name in order})
            print(f"round {k + 1}: " + ", ".join(f"{n} {r['wall_s']} s" for n, r in rounds[-1].items()), flush=True)
    scaling = [r["ray1"]["wall_s"] / r["ray2"]["wall_s"] for r in rounds]
    steady = [r["ray1"]["span_s"] / r["ray2"]["span_s"] for r in rounds]
    # What Ray adds an input: the span from the first input's start to the last one's end, over the plain
    # CLI's; what it adds once (starting Ray and the workers, stopping them) is the rest of the wall time.
    added = [(r["ray1"]["span_s"] - r["plain"]["span_s"]) / args.files for r in rounds]
    per_input = statistics.median(r["plain"]["span_s"] / args.files for r in rounds)
    once = [(r["ray1"]["wall_s"] - r["ray1"]["span_s"]) - (r["plain"]["wall_s"] - r["plain"]["span_s"]) for r in rounds]
    print(f"{args.files} clips of {args.frames} frames at {args.size}; wall seconds, median of {args.rounds} rounds:")
    for name in RUNS:
        walls = [r[name]["wall_s"] for r in rounds]
        fps = statistics.median(r[name]["frames"] / r[name]["wall_s"] for r in rounds)
        rss = max(r[name]["driver_peak_rss_mb"] for r in rounds)
        print(f"  {name:<6} {statistics.median(walls):6.1f} s  {fps:5.1f} fps  driver peak RSS {rss:.0f} MB  ({walls})")
    print(f"ray2 / ray1 scaling: {statistics.median(steady):.2f}x from the first input's start to the last one's end "
          f"(each round: {' '.join(f'{s:.2f}' for s in steady)}); {statistics.median(scaling):.2f}x in wall time "
          f"(each round: {' '.join(f'{s:.2f}' for s in scaling)})")
    print(f"Ray's cost an input over the plain CLI: {statistics.median(added):+.2f} s "
          f"({statistics.median(added) / per_input:+.1%} of an input, which takes {per_input:.2f} s plain); "
          f"once a job (Ray and its workers started and stopped): {statistics.median(once):+.1f} s")
    Path(args.json).write_text(json.dumps({**provenance(), "args": vars(args), "rounds": rounds}, indent=2))
