"""CUDA graphs for the forward pass: what can be checked without a GPU (the capture itself is in test_cuda.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Mask2FormerForUniversalSegmentation

from streamseg.config import load_config
from streamseg.inference.graphs import _KeptConstants, capture_supported, graph_sizes


@pytest.mark.parametrize(("batch", "sizes"), [(1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]),
                                               (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12])])
def test_graph_sizes(batch: int, sizes: list[int]) -> None:
    assert graph_sizes(batch) == sizes


class _Counting(dict):
    count = 0

    def __getitem__(self, key):
        self.count += 1
        return super().__getitem__(key)


def test_the_models_device_constants_are_kept_and_reused(tiny_model_fixed: Path) -> None:
    """transformers' Mask2Former makes small tensors from Python lists on the device in every pass (which a
    capture forbids): a warm-up pass keeps them all, so a second pass that may not make any runs through,
    and computes the same. Shown here with the CPU as "the device"."""
    model = Mask2FormerForUniversalSegmentation.from_pretrained(tiny_model_fixed).eval()
    pixels = torch.randn(2, 3, 128, 128)
    kept = _KeptConstants(torch.device("cpu"))
    with torch.inference_mode():
        with kept:
            first = model(pixel_values=pixels)
        assert kept.kept  # the pixel decoder's level shapes, at least
        served = _Counting(kept.kept)
        kept.kept, kept.reuse = served, True
        with kept:  # a constant not kept would raise here
            second = model(pixel_values=pixels)
    assert served.count >= len(served) and len(served) == len(kept.kept)
    torch.testing.assert_close(second.masks_queries_logits, first.masks_queries_logits)
    torch.testing.assert_close(second.class_queries_logits, first.class_queries_logits)


def test_a_constant_seen_only_when_reusing_is_an_error() -> None:
    kept = _KeptConstants(torch.device("cpu"))
    with kept:
        torch.tensor([1, 2], device="cpu")
    kept.reuse = True
    with kept:
        assert torch.tensor([1, 2], device="cpu") is kept.kept[("tensor", "[1, 2]", "None")]
        assert torch.tensor([1, 2]).tolist() == [1, 2]  # not made on the device: left alone
        with pytest.raises(RuntimeError, match="only while captured"):
            torch.tensor([3], device="cpu")


def test_cuda_graphs_are_on_by_default_and_can_be_turned_off() -> None:
    assert load_config(None).model.cuda_graphs is True
    assert load_config(None, model__cuda_graphs=False).model.cuda_graphs is False


@pytest.mark.parametrize(("version", "supported"), [("5.17.0", True), ("5.0.0.dev0", True), ("4.46.3", False),
                                                    ("4.57.1", False), ("6.1", True)])
def test_capture_is_tried_from_transformers_5(version: str, supported: bool) -> None:
    assert capture_supported(version) is supported


def test_a_batch_of_one_kind_of_frame_takes_the_whole_graph() -> None:
    """Which batches go through the graph that holds colour conversion and preprocessing too (on CUDA):
    frames of one size, layout and colour matrix, no more than the batch size. What that graph runs, and
    what it falls back to, compute what the plain path does (shown here on the CPU, without capturing)."""
    import dataclasses

    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.sources import read_frames

    from .conftest import SAMPLE_CLIP, SAMPLE_MODEL

    loaded = load_model(str(SAMPLE_MODEL), device="cpu")
    runner = ModelRunner(loaded, "panoptic", PostprocessConfig(), batch_size=4)
    plain_runner = ModelRunner(loaded, "panoptic", PostprocessConfig(), batch_size=4)
    assert runner._whole is None  # only on CUDA
    runner._whole = {}
    yuv = [f for _, f in zip(range(4), read_frames(SAMPLE_CLIP, yuv=True))]
    rgb = [f for _, f in zip(range(4), read_frames(SAMPLE_CLIP))]
    assert yuv[0].pixel_format == "yuv420p" and rgb[0].pixel_format == "rgb24"
    other_matrix = dataclasses.replace(yuv[1], matrix="bt709")
    assert runner._whole_graph(yuv) is not None and runner._whole_graph(rgb[:3]) is not None
    assert sorted(runner._whole) == [("rgb24", None), ("yuv420p", "bt601")]
    smaller = dataclasses.replace(rgb[1], pixels=rgb[1].pixels[:-2])
    for mixed in ([yuv[0], rgb[1]], [yuv[0], other_matrix], [rgb[0], smaller], [*yuv, yuv[0]]):
        assert runner._whole_graph(mixed) is None
    with torch.inference_mode():
        for frames in (yuv, rgb):
            whole = runner._whole_graph(frames)
            raw = torch.stack([torch.from_numpy(f.pixels) for f in frames])
            plain = plain_runner.forward(frames)  # the CPU's path: conversion, preprocessing, the model
            for got in (whole.fn(raw), whole.fallback(raw)):
                assert torch.equal(got[0], torch.stack(plain.images))
                torch.testing.assert_close(got[1], plain.class_logits)
                torch.testing.assert_close(got[2], plain.mask_logits)
                torch.testing.assert_close(got[3], plain.embeddings)
    runner.max_batch = 2  # after running out of memory: batches are split, outside the whole graph
    assert runner._whole_graph(yuv[:2]) is not None and runner._whole_graph(yuv[:3]) is None
