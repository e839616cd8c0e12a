"""What a whole ``streamseg segment`` process costs: wall time, CPU time, system time and minor page faults.

Each source tree's CLI runs the same clip with the sample model, alternated for ``--rounds``; CPU time
is steadier than wall time on a shared machine, and faults and system time show memory handed back to
the OS and taken again. The clip is made once (the same synthetic scene as bench.py). Run by hand:

    python benchmarks/cli_cost.py --size 1280x720 --task panoptic --rounds 3 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baselines import ROOT, source_trees


def run(tree: Path, clip: Path, task: str, out: Path) -> tuple[float, float, float, int]:
    """Wall, CPU (user + system) and system seconds, and minor faults, of one CLI process."""
    cmd = [sys.executable, "-m", "streamseg", "segment", str(clip), "-o", str(out / "out.mp4"),
           "--save-masks", str(out / "out.jsonl"), "--task", task, "--model", str(ROOT / "samples" / "model"),
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status:
        sys.exit(f"{tree}: exit status {status}: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_stime, usage.ru_minflt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=164)
    parser.add_argument("--task", default="panoptic", choices=("semantic", "instance", "panoptic"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="also run the package in this source tree (an earlier checkout)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    trees = source_trees(parser, args.baseline)
    with tempfile.TemporaryDirectory() as tmp:
        from bench import make_clip

        clip = make_clip(Path(tmp) / "clip.mp4", width, height, args.frames)
        rows: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                rows[name].append(run(tree, clip, args.task, Path(tmp)))
                wall, cpu, system, faults = rows[name][-1]
                print(f"round {r + 1} {name}: wall {wall:.1f} s, CPU {cpu:.1f} s, system {system:.2f} s, "
                      f"{faults} minor faults", flush=True)
    print(f"\n{args.frames} frames of {args.size}, {args.task}, sample model (median of {args.rounds} rounds)")
    for name, values in rows.items():
        wall, cpu, system, faults = (statistics.median(column) for column in zip(*values))
        print(f"  {name:10s} wall {wall:6.2f} s  CPU {cpu:6.2f} s  system {system:5.2f} s  faults {faults:9.0f}")
    if len(trees) == 2:
        (a, first), (b, second) = rows.items()
        for i, label in ((1, "CPU"), (0, "wall")):
            ratios = [x[i] / y[i] for x, y in zip(first, second)]
            print(f"{a} / {b}, {label} time: {statistics.median(ratios):.2f} (each round: "
                  + " ".join(f"{x:.2f}" for x in ratios) + ")")


if __name__ == "__main__":
    main()
