"""``bench.py components``: the CPU time a frame of the stages that run beside the forward pass, each
alone in one thread, as a pipeline's threads run them:

- ``finish``: post-processing and drawing (``ModelRunner.finish``) of the trained sample model's real
  segments over synthetic frames, per task;
- ``export``: the JSONL record (RLE of every segment) of a frame with 4, 20 and 60 segments;
- ``encode``: ``VideoSink.write`` of drawn frames (YUV as a GPU hands them on, RGB as a CPU run does),
  libx264 ultrafast, so that little of x264's own work lands on the calling thread.

Each part of each tree (this checkout, and with ``--baseline DIR`` an earlier one) runs in a process of
its own, the trees alternated for ``--rounds``; the ratio is taken within a round. Run by hand:

    python benchmarks/bench.py components --size 1280x720 --rounds 3 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from harness import ROOT, provenance, check_tree, child_result, first_module, source_trees

SEGMENT_COUNTS = (4, 20, 60)


def _frames(width: int, height: int, count: int) -> list:
    from streamseg.types import Frame

    scene = first_module("streamseg.testing.synthetic", "streamseg.synthetic").Scene(3, aspect=width / height)
    return [Frame(pixels=scene.render(i, width, height)[0], index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            for i in range(count)]


def finish_ms(task: str, width: int, height: int, batch: int, repeats: int) -> dict[str, float]:
    """Milliseconds a frame of each stage of ``ModelRunner.finish``, median of ``repeats`` on one batch."""
    import torch

    from streamseg.annotators.masks import MaskAnnotator
    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    first_module("streamseg.runtime.allocator", "streamseg.allocator").keep_freed_memory()  # as a pipeline runs
    runner = ModelRunner(load_model(str(ROOT / "samples" / "model"), device="cpu"), task, PostprocessConfig(),
                         annotator=MaskAnnotator())
    with torch.inference_mode():
        forwarded = runner.forward(_frames(width, height, batch))
        torch.set_num_threads(1)
        runner.finish(forwarded)  # first-call costs
        times: dict[str, list[float]] = {"postprocess": [], "render": []}
        for _ in range(repeats):
            forwarded.timer.times = dict.fromkeys(forwarded.timer.times, 0.0)
            result = runner.finish(forwarded)[0]
            for stage, values in times.items():
                values.append(1000 * result.stats[stage])
    return {stage: statistics.median(values) for stage, values in times.items()}


def export_ms(width: int, height: int, frames: int = 60) -> dict[str, float]:
    """CPU milliseconds a frame of a JSONL record and its line, by segment count: blocky segments (a coarse
    random grid of ids scaled up), handed over column-major as a GPU hands them."""
    import numpy as np
    import torch

    from streamseg.sinks.jsonl import result_record
    from streamseg.types import FrameResult, Segmentation, column_major

    frame = _frames(width, height, 1)[0]
    rng = np.random.default_rng(0)
    out = {}
    for n in SEGMENT_COUNTS:
        grid = torch.from_numpy(rng.integers(0, n + 1, (max(2, height // 40), max(2, width // 40))).astype(np.int32))
        segment_map = torch.nn.functional.interpolate(grid[None, None].float(), size=(height, width))[0, 0]
        seg = Segmentation("panoptic", list(range(1, n + 1)), [k % 80 for k in range(n)], [0.9] * n, [1] * n,
                           [(0, 0, 1, 1)] * n, size=(height, width), segment_map=column_major(segment_map.int()))
        result = FrameResult(frame, seg)
        json.dumps(result_record(result))  # first-call costs
        start = time.thread_time()
        for _ in range(frames):
            json.dumps(result_record(result))
        out[f"{n} segments"] = 1000 * (time.thread_time() - start) / frames
    return out


def encode_ms(width: int, height: int, frames: int = 90) -> dict[str, float]:
    """The calling thread's CPU milliseconds a frame in ``VideoSink.write``, YUV and RGB drawn frames."""
    import torch

    from streamseg.inference.color import rgb_to_yuv420
    from streamseg.sinks.video import VideoSink
    from streamseg.types import FrameResult, Segmentation

    source = _frames(width, height, 30)
    drawn = {"rgb24": [f.pixels for f in source],
             "yuv420p": [rgb_to_yuv420(torch.from_numpy(f.pixels)[None])[0].numpy() for f in source]}
    empty = Segmentation("panoptic", [], [], [], [], [], size=(height, width))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, images in drawn.items():
            spent = 0.0
            with VideoSink(Path(tmp) / f"{layout}.mp4", time_base=Fraction(1, 30), preset="ultrafast") as sink:
                for i in range(frames):
                    frame = source[i % len(source)]
                    result = FrameResult(frame.__class__(**{**frame.__dict__, "index": i, "pts": i}), empty,
                                         images[i % len(images)].copy(), drawn_format=layout)
                    start = time.thread_time()
                    sink.write(result)
                    spent += time.thread_time() - start
            out[layout] = 1000 * spent / frames
    return out


PARTS = ("finish", "export", "encode")


def measure(part: str, width: int, height: int, batch: int, repeats: int, tasks: list[str]) -> dict[str, dict]:
    if part == "finish":
        return {f"finish {task}": finish_ms(task, width, height, batch, repeats) for task in tasks}
    return {part: export_ms(width, height) if part == "export" else encode_ms(width, height)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py components", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--tasks", default="panoptic,semantic,instance")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="also time the package in this tree")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        found = measure(args.child, width, height, args.batch_size, args.repeats, args.tasks.split(","))
        check_tree()
        print(json.dumps(found))
        return
    trees = source_trees(parser, args.baseline)
    rounds = []
    for r in range(args.rounds):
        # Each part of each tree in a process of its own, so that none runs after another's work (its
        # threads, its memory); the trees alternate part by part, and which goes first from round to round.
        rounds.append({name: {} for name in trees})
        order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
        for part in PARTS:
            for name, tree in order:
                rounds[-1][name].update(child_result(tree, "components", "--child", part, "--size", args.size,
                                                     "--tasks", args.tasks, "--batch-size", str(args.batch_size),
                                                     "--repeats", str(args.repeats)))
        print(f"round {r + 1} done", file=sys.stderr, flush=True)
    print(f"CPU ms a frame at {args.size}, batch {args.batch_size}, one thread (median of {args.rounds} rounds)")
    for part in rounds[0]["streamseg"]:
        for what in rounds[0]["streamseg"][part]:
            cells = [f"{name} {statistics.median(r[name][part][what] for r in rounds):7.2f}" for name in trees]
            row = f"  {part:<18} {what:<12} " + " | ".join(cells)
            if args.baseline:
                ratios = [r["streamseg"][part][what] / r["baseline"][part][what] for r in rounds]
                row += f" | ratio {statistics.median(ratios):.2f}"
            print(row)
    if args.json:
        Path(args.json).write_text(json.dumps({**provenance(), "args": vars(args), "rounds": rounds}, indent=2))
