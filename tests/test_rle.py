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
