"""COCO run-length encoding of binary masks, byte for byte as pycocotools writes it.

Runs are counted in column-major order, starting with a run of zeros, and packed into the compressed
string form of ``rleToString`` (deltas against the run two back, 5 bits per character). Encoding is
vectorized: a frame's masks cost a few numpy passes over its pixels, not one Python step per run,
and a map of non-overlapping segments is encoded in one pass for all of them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode", "encode_masks", "encode_map", "decode"]

_CHUNKS = 7  # 5-bit groups enough for any signed 32-bit delta


def encode(mask: np.ndarray) -> dict:
    """Encode an (H, W) mask as ``{"size": [h, w], "counts": str}``."""
    return encode_masks(np.asarray(mask, dtype=bool)[None])[0]


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Encode (N, H, W) masks, which may overlap, in one pass over their pixels."""
    n, height, width = masks.shape
    size = [int(height), int(width)]
    total = height * width
    if total == 0:
        return [{"size": size, "counts": ""} for _ in range(n)]
    flat = np.ascontiguousarray(np.asarray(masks, dtype=bool).transpose(0, 2, 1)).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # across all masks, one after the other
    change = change[change % total != 0]  # where one mask ends and the next begins is no change
    bounds = np.searchsorted(change, np.arange(n + 1) * total)
    out = []
    for k in range(n):
        edges = np.concatenate(([0], change[bounds[k] : bounds[k + 1]] - k * total, [total]))
        runs = np.diff(edges)
        if flat[k * total]:
            runs = np.concatenate(([0], runs))
        out.append({"size": size, "counts": _to_string(runs)})
    return out


def encode_map(segment_map: np.ndarray, n: int) -> list[dict]:
    """Encode the masks of segments 1..n of an (H, W) map (k + 1 where segment k is, 0 where none is),
    as ``encode(segment_map == k + 1)`` would, with one pass over the map for all of them."""
    height, width = segment_map.shape
    size = [int(height), int(width)]
    total = height * width
    if total == 0:
        return [{"size": size, "counts": ""} for _ in range(n)]
    flat = np.ascontiguousarray(segment_map.T).ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    ends = np.append(starts[1:], total)
    values = flat[starts]
    order = np.argsort(values, kind="stable")  # each value's runs together, in pixel order
    bounds = np.searchsorted(values[order], np.arange(1, n + 2))
    out = []
    for k in range(n):
        runs_of_k = order[bounds[k] : bounds[k + 1]]
        s, e = starts[runs_of_k], ends[runs_of_k]
        if len(s) == 0:
            out.append({"size": size, "counts": _to_string(np.array([total]))})
            continue
        runs = np.empty(2 * len(s) + 1, dtype=np.int64)
        runs[0] = s[0]  # zeros before the first run (0 when the mask starts set)
        runs[2:-1:2] = s[1:] - e[:-1]
        runs[1::2] = e - s
        runs[-1] = total - e[-1]
        if runs[-1] == 0:  # a mask that ends set has no closing run of zeros
            runs = runs[:-1]
        out.append({"size": size, "counts": _to_string(runs)})
    return out


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


def _to_string(runs: np.ndarray) -> str:
    """pycocotools' ``rleToString``: each run as its difference from the run two back (from the fourth
    run on), in little-endian groups of 5 bits, the sign in the last group's top bit, 0x20 meaning
    "more groups follow", offset by 48 to printable characters."""
    runs = np.asarray(runs, dtype=np.int64)
    x = runs.copy()
    x[3:] -= runs[1:-2]
    groups = np.ones(len(x), dtype=np.int64)  # how many 5-bit groups each value needs, sign included
    for k in range(1, _CHUNKS):
        limit = 1 << (5 * k - 1)
        groups += (x < -limit) | (x >= limit)
    j = np.arange(_CHUNKS)
    chars = (x[:, None] >> (5 * j)) & 0x1F
    chars |= np.where(j < groups[:, None] - 1, 0x20, 0)
    chars += 48
    return chars[j < groups[:, None]].astype(np.uint8).tobytes().decode("ascii")


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
