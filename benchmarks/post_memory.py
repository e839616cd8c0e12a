"""Peak memory and time of full-size post-processing, for a model with many classes or kept queries.

transformers resizes every class's scores (semantic) or every kept query's probabilities (panoptic)
to the frame's size before taking the argmax: 150 ADE20k classes at 4K are 150 x 8.3M floats, 5 GB
for one frame, on whatever device post-processing runs. Run by hand:

    python benchmarks/post_memory.py --sizes 1920x1080,3840x2160 --baseline /tmp/base

Each measurement runs in its own process on the CPU, with the outputs of a 150-class, 100-query
model (random values, as a model's: the cost does not depend on them), one thread, and reports the
growth of peak RSS over the process's peak before the call, and the call's time.
``--baseline DIR``: also measure the package in DIR (an earlier commit's checkout), alternated.
"""

from __future__ import annotations

import argparse
import json
import sys

from baselines import child_result, source_trees


def measure(task: str, width: int, height: int, classes: int, queries: int) -> dict[str, float]:
    import resource
    import time

    import torch

    from streamseg.inference.postprocess import panoptic, semantic

    torch.set_num_threads(1)  # the post-processing thread's setting
    g = torch.Generator().manual_seed(0)
    class_logits = torch.randn((1, queries, classes + 1), generator=g) * 4
    mask_logits = torch.randn((1, queries, 96, 96), generator=g) * 4
    if task == "panoptic":  # every query kept, each the first in a cell of its own: the largest case
        class_logits[..., :-1] += 20 * torch.nn.functional.one_hot(torch.arange(queries) % classes, classes)
        side = -(-queries // int(queries**0.5))
        cells = torch.arange(96)[:, None] * side // 96 * side + torch.arange(96)[None, :] * side // 96
        mask_logits = torch.where(cells == torch.arange(queries)[:, None, None], 8.0, -8.0)[None] + mask_logits / 8

    def run() -> list:
        if task == "panoptic":
            return panoptic(class_logits, mask_logits, [(height, width)], threshold=0.0, mask_threshold=0.05)
        return semantic(class_logits, mask_logits, [(height, width)])

    with torch.inference_mode():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        segments = len(run()[0])
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": (peak - before) / 1024, "ms": 1000 * seconds, "segments": segments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1920x1080,3840x2160", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--tasks", default="semantic,panoptic")
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", metavar="DIR", help="also measure the package in this tree")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tree, task, width, height = args.child
        sys.path.insert(0, tree)
        print(json.dumps(measure(task, int(width), int(height), args.classes, args.queries)))
        return
    trees = source_trees(parser, args.baseline)
    print(f"{args.classes} classes, {args.queries} queries; peak RSS growth MB / ms (median of {args.rounds} rounds)")
    for task in args.tasks.split(","):
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    runs[name].append(child_result(__file__, "--classes", str(args.classes), "--queries",
                                                   str(args.queries), "--child", str(tree), task, str(width), str(height)))
            cells = []
            for name, results in runs.items():
                peak = sorted(r["peak_mb"] for r in results)[len(results) // 2]
                ms = sorted(r["ms"] for r in results)[len(results) // 2]
                cells.append(f"{name} {peak:7.0f} MB {ms:8.0f} ms ({results[0]['segments']} segments)")
            print(f"{task:>9} {width}x{height}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
