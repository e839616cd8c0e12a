"""The shipped sample checkpoint segments the shipped clip correctly, through the whole pipeline.

decode → preprocess → model → post-processing → ``--save-masks`` JSONL, scored against the clip's
exact ground truth. Random weights cannot pass this; a colour-channel swap, a misaligned resize or
frames out of order would fail it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamseg.testing.evaluation import panoptic_quality, read_jsonl, semantic_miou
from streamseg.testing.synthetic import LABELS, THING_IDS

from .conftest import ROOT, SAMPLE_CLIP, SAMPLE_MODEL, run_cli

TRUTH = ROOT / "samples" / "shapes.truth.jsonl"
pytestmark = pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")

MIOU_BAR = 0.85
PQ_THINGS_BAR = 0.6


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sample")
    out = {}
    for task in ("semantic", "panoptic"):
        out[task] = folder / f"{task}.jsonl"
        proc = run_cli("segment", str(SAMPLE_CLIP), "--config", "configs/sample.yaml", "--task", task,
                       "--save-masks", str(out[task]))
        assert proc.returncode == 0, proc.stderr
    return out


def test_semantic_miou(exports: dict[str, Path]) -> None:
    quality = semantic_miou(read_jsonl(exports["semantic"]), read_jsonl(TRUTH), range(len(LABELS)))
    print(f"semantic mIoU {quality.value:.3f} {quality.per_class}")
    assert quality.value >= MIOU_BAR


def test_panoptic_quality_of_things(exports: dict[str, Path]) -> None:
    quality = panoptic_quality(read_jsonl(exports["panoptic"]), read_jsonl(TRUTH), THING_IDS)
    print(f"PQ things {quality.value:.3f} {quality.per_class}")
    assert quality.value >= PQ_THINGS_BAR


def test_every_frame_in_order(exports: dict[str, Path]) -> None:
    records = [json.loads(line) for line in exports["panoptic"].read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(300))


def test_scores_collapse_when_channels_are_swapped(tmp_path: Path) -> None:
    """The metric can fail: the same model fed BGR instead of RGB loses much of its accuracy."""
    from fractions import Fraction

    import av
    import numpy as np

    swapped = tmp_path / "bgr.mkv"
    with av.open(str(SAMPLE_CLIP)) as src, av.open(str(swapped), "w") as dst:
        stream = dst.add_stream("libx264", rate=30, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, frame in zip(range(60), src.decode(video=0)):
            out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.to_ndarray(format="rgb24")[..., ::-1]),
                                             format="rgb24")
            out.pts, out.time_base = i, Fraction(1, 30)
            for packet in stream.encode(out):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    masks = tmp_path / "m.jsonl"
    proc = run_cli("segment", str(swapped), "--config", "configs/sample.yaml", "--task", "semantic",
                   "--save-masks", str(masks))
    assert proc.returncode == 0, proc.stderr
    quality = semantic_miou(read_jsonl(masks), read_jsonl(TRUTH)[:60], range(len(LABELS)))
    assert quality.value < MIOU_BAR - 0.1
