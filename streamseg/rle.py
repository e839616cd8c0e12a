"""COCO run-length encoding of binary masks, byte for byte as pycocotools writes it.

Runs are counted in column-major order, starting with a run of zeros, and packed into the compressed
string form of ``rleToString`` (deltas against the run two back, 5 bits per character).
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode", "decode"]


def encode(mask: np.ndarray) -> dict:
    """Encode an (H, W) mask as ``{"size": [h, w], "counts": str}``."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [height, width], "counts": ""}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return {"size": [height, width], "counts": _to_string(runs)}


def decode(rle: dict) -> np.ndarray:
    """Decode ``{"size": [h, w], "counts": str}`` back to an (H, W) bool mask."""
    height, width = rle["size"]
    runs = _from_string(rle["counts"])
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, size says {height}x{width}")
    return flat.reshape((width, height)).T


def _to_string(runs: list[int]) -> str:
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def _from_string(counts: str) -> list[int]:
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs
