"""Render the shipped sample clip and its ground truth.

Reproduce with:
    python scripts/make_sample_clip.py --out samples/shapes.mp4

``--truth-only`` rewrites the ground truth alone (the clip's encoding is left as it is).

The scene seed (2,000,001) is outside the training range (below 1,000,000). The clip is H.264 with an
AAC sound track (a short tune, so audio passthrough can be heard); the ground truth goes to
``<out>.truth.jsonl`` in the same format as ``--save-masks`` (panoptic ids, label ids, COCO RLE).
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from streamseg.testing.synthetic import FrameTruth, Scene, truth_record, write_clip

SEED = 2_000_001


def tune(seconds: float, rate: int) -> np.ndarray:
    """A few soft notes, (2, samples) float32."""
    t = np.arange(int(seconds * rate)) / rate
    notes = [262, 330, 392, 523, 392, 330]
    freq = np.array(notes)[(t * 2).astype(int) % len(notes)]
    envelope = np.exp(-((t * 2) % 1.0) * 3.0)
    mono = 0.2 * np.sin(2 * np.pi * freq * t) * envelope
    return np.stack([mono, mono]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples/shapes.mp4"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--truth-only", action="store_true", help="write the ground truth, not the clip")
    args = parser.parse_args()

    frames = int(args.seconds * args.fps)
    truth_path = args.out.with_suffix(".truth.jsonl")
    with open(truth_path, "w") as truth_file:

        def record(i: int, truth: FrameTruth) -> None:
            truth_file.write(json.dumps(truth_record(i, truth)) + "\n")

        scene = Scene(args.seed, aspect=args.width / args.height)
        if args.truth_only:
            for i in range(frames):
                record(i, scene.render(i, args.width, args.height)[1])
            print(f"wrote {truth_path}")
            return
        write_clip(args.out, scene, width=args.width,
                   height=args.height, pts=range(frames), time_base=Fraction(1, args.fps), rate=args.fps,
                   options={"crf": "18", "preset": "slow"}, audio=tune(args.seconds, 48000), on_frame=record)
    print(f"wrote {args.out} ({frames} frames, {args.out.stat().st_size / 1e6:.1f} MB) and {truth_path}")


if __name__ == "__main__":
    main()
