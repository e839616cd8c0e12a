"""The post-processing thread's CPU time a frame: post-processing and drawing, as the pipeline runs them.

At 720p on a CPU this thread binds the pipeline (80% of a core and more while the others wait), so
each millisecond here is frame rate. Run by hand:

    python benchmarks/post_cpu.py --size 1280x720 --baseline /tmp/base

The trained sample model (real segments, about four a frame) over synthetic frames, one thread (the
post-processing thread's setting); the second half of the model runner (``ModelRunner.finish``) is
timed ``--repeats`` times on one batch, and its per-stage times are reported, median of the repeats.
Each tree runs in its own process, alternated for ``--rounds``; the ratio is taken within a round.
``--baseline DIR``: also time the package in DIR (an earlier commit's checkout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from fractions import Fraction

from baselines import ROOT, child_result, source_trees

STAGES = ("postprocess", "render")


def measure(task: str, width: int, height: int, batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds a frame of each stage of ``finish``, median of ``repeats``."""
    import torch

    from streamseg.annotators.masks import MaskAnnotator
    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.testing.synthetic import Scene
    from streamseg.types import Frame

    try:  # freed memory kept for reuse, as a pipeline of this tree runs (trees before it had no such thing)
        from streamseg.runtime.allocator import keep_freed_memory
    except ImportError:
        pass
    else:
        keep_freed_memory()
    loaded = load_model(str(ROOT / "samples" / "model"), device="cpu")
    runner = ModelRunner(loaded, task, PostprocessConfig(), annotator=MaskAnnotator())
    scene = Scene(3)
    frames = [Frame(pixels=scene.render(i, width, height)[0], index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
              for i in range(batch)]
    with torch.inference_mode():
        forwarded = runner.forward(frames)
        torch.set_num_threads(1)
        runner.finish(forwarded)  # first-call costs
        times: dict[str, list[float]] = {stage: [] for stage in STAGES}
        for _ in range(repeats):
            forwarded.timer.times = dict.fromkeys(forwarded.timer.times, 0.0)
            results = runner.finish(forwarded)
            for stage in STAGES:
                times[stage].append(1000 * results[0].stats[stage])
    return {stage: statistics.median(values) for stage, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--tasks", default="panoptic,semantic,instance")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="also time the package in this tree")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        tree, task = args.child
        sys.path.insert(0, tree)
        print(json.dumps(measure(task, width, height, args.batch_size, args.repeats)))
        return
    trees = source_trees(parser, args.baseline)
    print(f"post-processing thread, CPU ms a frame of {args.size}, batch {args.batch_size}, one thread "
          f"(median of {args.rounds} rounds)")
    for task in args.tasks.split(","):
        rounds = []
        for _ in range(args.rounds):
            rounds.append({})
            for name, tree in trees.items():
                rounds[-1][name] = child_result(__file__, "--child", str(tree), task, "--size", args.size,
                                                "--batch-size", str(args.batch_size), "--repeats", str(args.repeats))
        cells = []
        for name in trees:
            each = {stage: statistics.median(r[name][stage] for r in rounds) for stage in STAGES}
            cells.append(f"{name} " + " ".join(f"{stage} {each[stage]:.1f}" for stage in STAGES))
        row = f"{task:>9}: " + " | ".join(cells)
        if args.baseline:
            ratios = [sum(r["streamseg"].values()) / sum(r["baseline"].values()) for r in rounds]
            row += f" | streamseg / baseline {statistics.median(ratios):.2f} (" + " ".join(f"{x:.2f}" for x in ratios) + ")"
        print(row)


if __name__ == "__main__":
    main()
