"""The mask export's CPU time a frame (its JSON record, RLE of every segment), by segment count.

On a GPU the export runs in its own thread at the pipeline's frame rate, much of it holding the
interpreter lock, so its time a frame counts once a model finds many segments. Run by hand:

    python benchmarks/export_cpu.py --size 1280x720 --segments 4,20,60 --baseline /tmp/base

Segment maps come as a GPU hands them over (column-major), with blocky segments like a model's; each
tree runs in its own process, alternated for ``--rounds``, and the ratio is taken within a round.
``--baseline DIR``: also time the package in DIR (an earlier commit's checkout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from fractions import Fraction

from baselines import child_result, source_trees


def measure(segments: list[int], width: int, height: int, frames: int) -> dict[int, float]:
    """CPU milliseconds a frame of ``result_record`` and its JSON line, for each segment count."""
    import numpy as np
    import torch

    from streamseg.sinks.jsonl import result_record
    from streamseg.testing.synthetic import Scene
    from streamseg.types import Frame, FrameResult, Segmentation, column_major

    image = Scene(1).render(0, width, height)[0]
    frame = Frame(pixels=image, index=0, pts=0, time_base=Fraction(1, 30), time=0.0)
    rng = np.random.default_rng(0)
    out = {}
    for n in segments:
        results = []
        for _ in range(8):
            # Blocky segments: a coarse random grid of ids scaled up, so runs are as long as a model's.
            grid = torch.from_numpy(rng.integers(0, n + 1, (max(2, height // 40), max(2, width // 40))).astype(np.int32))
            segment_map = torch.nn.functional.interpolate(grid[None, None].float(), size=(height, width),
                                                          mode="nearest")[0, 0].to(torch.int32)
            seg = Segmentation("panoptic", list(range(1, n + 1)), [k % 80 for k in range(n)], [0.9] * n,
                               [1] * n, [(0, 0, 1, 1)] * n, size=(height, width),
                               segment_map=column_major(segment_map))
            results.append(FrameResult(frame, seg))
        json.dumps(result_record(results[0]))  # first-call costs
        start = time.thread_time()
        for i in range(frames):
            json.dumps(result_record(results[i % len(results)]))
        out[n] = 1000 * (time.thread_time() - start) / frames
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--segments", default="4,20,60", help="segment counts, comma-separated")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="also time the package in this tree")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    segments = [int(v) for v in args.segments.split(",")]
    if args.child:
        sys.path.insert(0, args.child)
        print(json.dumps(measure(segments, width, height, args.frames)))
        return
    trees = source_trees(parser, args.baseline)
    rounds = []
    for _ in range(args.rounds):
        rounds.append({})
        for name, tree in trees.items():
            result = child_result(__file__, "--child", str(tree), "--size", args.size, "--segments", args.segments,
                                  "--frames", str(args.frames))
            rounds[-1][name] = {int(k): v for k, v in result.items()}
    print(f"mask export, CPU ms a frame of {args.size} (median of {args.rounds} rounds):")
    print(f"{'segments':>9}" + "".join(f"{name:>12}" for name in trees) + ("  streamseg / baseline" if args.baseline else ""))
    for n in segments:
        row = f"{n:>9}" + "".join(f"{statistics.median(r[name][n] for r in rounds):12.2f}" for name in trees)
        if args.baseline:
            ratios = [r["streamseg"][n] / r["baseline"][n] for r in rounds]
            row += f"  {statistics.median(ratios):.2f} (" + " ".join(f"{x:.2f}" for x in ratios) + ")"
        print(row)


if __name__ == "__main__":
    main()
