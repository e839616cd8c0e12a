"""COCO RLE: byte-for-byte what pycocotools writes, and a lossless round trip."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg import rle


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), bool)
    yield np.ones((7, 5), bool)
    blob = np.zeros((360, 640), bool)
    blob[100:250, 30:400] = True
    yield blob
    for _ in range(100):
        h, w = rng.integers(1, 50, 2)
        yield rng.random((h, w)) < rng.random()


@pytest.mark.parametrize("mask", list(_masks()))
def test_round_trip(mask: np.ndarray) -> None:
    encoded = rle.encode(mask)
    assert encoded["size"] == list(mask.shape)
    assert np.array_equal(rle.decode(encoded), mask)


def test_matches_pycocotools() -> None:
    coco = pytest.importorskip("pycocotools.mask")
    for mask in _masks():
        ref = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle.encode(mask)["counts"] == ref["counts"].decode()
        assert np.array_equal(coco.decode({"size": list(mask.shape), "counts": rle.encode(mask)["counts"]}), mask)


def test_corrupt_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="covers"):
        rle.decode({"size": [10, 10], "counts": rle.encode(np.ones((5, 5), bool))["counts"]})


def _maps():
    rng = np.random.default_rng(1)
    yield np.zeros((6, 4), np.int32), 0
    yield np.ones((6, 4), np.int32), 1  # one segment covering everything: no run of zeros at all
    yield np.full((6, 4), 2, np.int32), 3  # segments 1 and 3 absent from the map
    for n in (254, 255, 300):  # a row-major map is transposed as bytes below 255 segments, as it is above
        yield rng.integers(0, n + 1, (30, 40)).astype(np.int32), n
    for _ in range(200):
        h, w = rng.integers(1, 30, 2)
        n = int(rng.integers(1, 8))
        if rng.random() < 0.5:
            yield rng.integers(0, n + 1, (h, w)).astype(np.int32), n
        else:  # long runs: whole rows of one segment
            yield np.repeat(rng.integers(0, n + 1, (h, 1)), w, 1).astype(np.int32), n


@pytest.mark.parametrize(("segment_map", "n"), list(_maps()))
def test_map_encodes_each_segment_as_its_mask(segment_map: np.ndarray, n: int) -> None:
    masks = np.stack([segment_map == k + 1 for k in range(n)]) if n else np.zeros((0, *segment_map.shape), bool)
    from_map = rle.encode_map(segment_map, n)
    assert len(from_map) == n
    assert from_map == [rle.encode(m) for m in masks]
    assert rle.encode_masks(masks) == from_map
    # As Segmentation.cpu() hands them over from a GPU: stored column by column, read the same.
    import torch

    from streamseg.types import column_major

    by_columns = column_major(torch.from_numpy(segment_map)).numpy()
    stack = column_major(torch.from_numpy(masks)).numpy()
    assert np.array_equal(by_columns, segment_map) and (by_columns.flags.f_contiguous or by_columns.size <= 1)
    assert rle.encode_map(by_columns, n) == from_map and rle.encode_masks(stack) == from_map


def test_maps_of_many_segments_match_pycocotools() -> None:
    """All of a frame's segments are encoded together: each must still be what pycocotools writes for
    its mask alone (absent segments, one run, runs at either end of the frame, many segments)."""
    coco = pytest.importorskip("pycocotools.mask")
    for segment_map, n in list(_maps())[:83]:
        masks = np.stack([segment_map == k + 1 for k in range(n)]) if n else np.zeros((0, *segment_map.shape), bool)
        ref = [coco.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode() for m in masks]
        assert [e["counts"] for e in rle.encode_map(segment_map, n)] == ref
        assert [e["counts"] for e in rle.encode_masks(masks)] == ref


def test_many_overlapping_masks_match_pycocotools() -> None:
    coco = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    masks = rng.random((5, 33, 17)) < 0.3
    masks[1] = True  # one full mask between others: its runs must not leak into its neighbours'
    masks[2] = False
    ref = coco.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert [e["counts"] for e in rle.encode_masks(masks)] == [r["counts"].decode() for r in ref]


def test_large_runs_match_pycocotools() -> None:
    coco = pytest.importorskip("pycocotools.mask")
    mask = np.zeros((2000, 3000), bool)  # runs and deltas of millions need 5 groups of 5 bits
    mask[-1, -1] = True
    mask[:700, :1] = True
    assert rle.encode(mask)["counts"] == coco.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
