"""Torch ops a batch costs the post-processing thread, stage by stage: what a GPU run pays on the host.

On a GPU every op is a kernel launch (or a copy) that the calling thread prepares on the host, much
of it holding the interpreter lock, whatever the frame size (some microseconds each): so the count
of ops a batch is this thread's share of the host work that caps a GPU run, and it can be counted on
a CPU. Run by hand:

    python benchmarks/host_ops.py --batch-size 8 --size 1280x720

Runs the trained sample model (so frames have real segments) over synthetic frames, then counts the
ops of post-processing, drawing, the YUV conversion and the copies to the host for one batch as the
runner runs them on a GPU (drawn frames made YUV; per-frame work done for frames of one size at once,
``streamseg.ops.frames_at_once``). Ops on host tensors count too: they cost the host as well. Not
counted: what a GPU does apart from a CPU beyond that (copies of the maps back, one-op mask fills).
Also counted: the torch calls made from Python (a rough count of the thread's hand-overs of the
interpreter lock, which a GPU run pays for in waits to take it back).
"""

from __future__ import annotations

import argparse
import collections
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamseg import ops
from streamseg.annotators.masks import MaskAnnotator
from streamseg.config import PostprocessConfig
from streamseg.inference.loading import load_model
from streamseg.inference.runner import ModelRunner
from streamseg.testing.synthetic import Scene
from streamseg.types import Frame

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


class CallCounter(TorchFunctionMode):
    """Counts the torch functions and tensor methods called from Python in its scope (attribute reads
    apart): each one a hand-over of the interpreter lock, which the calling thread then waits to take back."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") != "__get__":
            self.calls += 1
        return func(*args, **(kwargs or {}))


def make_frames(count: int, width: int, height: int) -> list[Frame]:
    scene = Scene(3)
    return [Frame(pixels=scene.render(i, width, height)[0], index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            for i in range(count)]


def stage_ops(runner: ModelRunner, frames: list[Frame]) -> tuple[dict[str, int], collections.Counter, int]:
    """Ops per stage of ``runner.finish`` for one batch as a GPU runs it, all its ops by name, and the
    segments found."""
    import streamseg.inference.runner as runner_module

    forwarded = runner.forward(frames)
    per_stage: dict[str, collections.Counter] = {"postprocess": collections.Counter(), "render": collections.Counter()}

    def counted(stage, fn):
        def wrapper(*args, **kwargs):
            before = collections.Counter(counter.ops)
            out = fn(*args, **kwargs)
            per_stage[stage].update(counter.ops - before)
            return out
        return wrapper

    # Each stage's ops are told apart by wrapping its function; the GPU's choice is made on CPU tensors.
    saved = runner_module.postprocess, MaskAnnotator.annotate_batch, ops.frames_at_once
    runner_module.postprocess = counted("postprocess", saved[0])
    MaskAnnotator.annotate_batch = counted("render", saved[1])
    ops.frames_at_once = lambda device: True
    try:
        with OpCounter() as counter, CallCounter() as calls:
            results = runner.finish(forwarded)
    finally:
        runner_module.postprocess, MaskAnnotator.annotate_batch, ops.frames_at_once = saved
    counts = {stage: sum(stage_counter.values()) for stage, stage_counter in per_stage.items()}
    total = sum(counter.ops.values())
    counts["yuv and copies"] = total - sum(counts.values())
    counts["total"] = total
    counts["python calls"] = calls.calls
    return counts, counter.ops, sum(len(r.segmentation) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--task", default="panoptic", choices=("semantic", "instance", "panoptic"))
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="segment score threshold (1 finds no segment, as random weights in the GPU bench)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)  # the post-processing thread's setting

    loaded = load_model(str(ROOT / "samples" / "model"), device="cpu")
    runner = ModelRunner(loaded, args.task, PostprocessConfig(threshold=args.threshold), annotator=MaskAnnotator(),
                         yuv_out=True)
    with torch.inference_mode():
        frames = make_frames(args.batch_size, width, height)
        counts, every, segments = stage_ops(runner, frames)
    print(f"{args.task}, batch {args.batch_size} of {width}x{height}, {segments} segments "
          f"({segments / args.batch_size:.1f} a frame)")
    for name, n in counts.items():
        what = "torch calls from Python" if name == "python calls" else "ops"
        print(f"  {name:>15}: {n:5d} {what} a batch, {n / args.batch_size:6.1f} a frame")
    print("  commonest:", ", ".join(f"{k} {v}" for k, v in every.most_common(10)))


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    main()
