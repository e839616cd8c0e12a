"""Torch ops a batch costs the post-processing thread, stage by stage: what a GPU run pays on the host.

On a GPU every op is a kernel launch (or a copy) that the calling thread prepares on the host, much
of it holding the interpreter lock, whatever the frame size (some microseconds each): so the count
of ops a batch is this thread's share of the host work that caps a GPU run, and it can be counted on
a CPU. Run by hand:

    python benchmarks/host_ops.py --batch-size 8 --size 1280x720

Runs the trained sample model (so frames have real segments) over synthetic frames, then counts the
ops of post-processing, drawing, the YUV conversion and the copies to the host for one batch as the
runner runs them on a GPU (drawn frames made YUV; per-frame work done for the whole batch at once, see
``streamseg.ops.batch_chunks``), and times the same stages on 1/8-size frames (the CPU's way).
"""

from __future__ import annotations

import argparse
import collections
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamseg.annotators import masks as masks_module
from streamseg.annotators.masks import MaskAnnotator
from streamseg.config import PostprocessConfig
from streamseg.inference import postprocess as postprocess_module
from streamseg.inference.loading import load_model
from streamseg.inference.runner import ModelRunner
from streamseg.synthetic import Scene
from streamseg.types import Frame

CHUNKED = (postprocess_module, masks_module)  # modules that choose with batch_chunks how much to do at once
VIEWS = {"view", "_unsafe_view", "as_strided", "slice", "select", "unsqueeze", "squeeze", "expand", "t",
         "transpose", "permute", "alias", "split", "split_with_sizes", "unbind", "detach", "_reshape_alias",
         "reshape", "flatten", "diagonal", "narrow", "lift_fresh", "_to_copy_cpu"}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched in its scope, views apart (they launch nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def make_frames(count: int, width: int, height: int) -> list[Frame]:
    scene = Scene(3)
    return [Frame(pixels=scene.render(i, width, height)[0], index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            for i in range(count)]


def stage_ops(runner: ModelRunner, frames: list[Frame]) -> tuple[dict[str, int], collections.Counter, int]:
    """Ops per stage of ``runner.finish`` for one batch, the commonest ops, and the segments drawn."""
    forwarded = runner.forward(frames)
    counts: dict[str, int] = {}
    every: collections.Counter[str] = collections.Counter()
    stages = {"postprocess": "streamseg.inference.runner.postprocess",
              "render": "streamseg.annotators.masks.MaskAnnotator.annotate_batch"}
    # Count the whole finish, then each stage alone by wrapping it.
    import streamseg.inference.runner as runner_module

    original_post, original_annotate = runner_module.postprocess, MaskAnnotator.annotate_batch
    per_stage: dict[str, collections.Counter] = {name: collections.Counter() for name in stages}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            before = collections.Counter(counter.ops)
            out = fn(*args, **kwargs)
            per_stage[name].update(counter.ops - before)
            return out
        return wrapper

    gpu_chunks = lambda members, device: [members]
    originals = {m: m.batch_chunks for m in CHUNKED}
    for m in CHUNKED:
        m.batch_chunks = gpu_chunks
    runner_module.postprocess = counted("postprocess", original_post)
    MaskAnnotator.annotate_batch = counted("render", original_annotate)
    try:
        with OpCounter() as counter:
            results = runner.finish(forwarded)
    finally:
        runner_module.postprocess, MaskAnnotator.annotate_batch = original_post, original_annotate
        for m, chunks in originals.items():
            m.batch_chunks = chunks
    every.update(counter.ops)
    total = sum(counter.ops.values())
    for name, ops in per_stage.items():
        counts[name] = sum(ops.values())
    counts["yuv and copies"] = total - sum(counts.values())
    counts["total"] = total
    return counts, every, sum(len(r.segmentation) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--task", default="panoptic", choices=("semantic", "instance", "panoptic"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)  # the post-processing thread's setting

    loaded = load_model(str(ROOT / "samples" / "model"), device="cpu")
    runner = ModelRunner(loaded, args.task, PostprocessConfig(), annotator=MaskAnnotator(), yuv_out=True)
    with torch.inference_mode():
        frames = make_frames(args.batch_size, width, height)
        counts, every, segments = stage_ops(runner, frames)
    print(f"{args.task}, batch {args.batch_size} of {width}x{height}, {segments} segments "
          f"({segments / args.batch_size:.1f} a frame)")
    for name, n in counts.items():
        print(f"  {name:>15}: {n:5d} ops a batch, {n / args.batch_size:6.1f} a frame")
    print("  commonest:", ", ".join(f"{k} {v}" for k, v in every.most_common(10)))


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
