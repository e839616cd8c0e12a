"""COCO run-length encoding of binary masks, byte for byte as pycocotools writes it.

Runs are counted in column-major order, starting with a run of zeros, and packed into the compressed
string form of ``rleToString`` (deltas against the run two back, 5 bits per character). Encoding is
vectorized: a frame's masks cost a few numpy passes over its pixels, not one Python step per run,
and all its masks are encoded together, so many segments cost the numpy calls of one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode", "encode_masks", "encode_map", "decode"]

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
    # Runs of set pixels: from a change to a set pixel, or a mask's first pixel if set, to the next change.
    edges = np.union1d(change, np.arange(n) * total)
    set_run = flat[edges]
    starts = edges[set_run]
    ends = np.append(edges[1:], n * total)[set_run]
    mask = starts // total
    per_mask = np.bincount(mask, minlength=n)
    return [{"size": size, "counts": c}
            for c in _encode_runs(starts - mask * total, ends - mask * total, per_mask, total)]


def encode_map(segment_map: np.ndarray, n: int) -> list[dict]:
    """Encode the masks of segments 1..n of an (H, W) map (k + 1 where segment k is, 0 where none is),
    as ``encode(segment_map == k + 1)`` would, with one pass over the map for all of them."""
    height, width = segment_map.shape
    size = [int(height), int(width)]
    total = height * width
    if total == 0:
        return [{"size": size, "counts": ""} for _ in range(n)]
    columns = segment_map.T
    if not columns.flags.c_contiguous and n < 255:  # a row-major map: transposing one byte a pixel is faster
        columns = segment_map.astype(np.uint8).T
    flat = np.ascontiguousarray(columns).ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    ends = np.append(starts[1:], total)
    values = flat[starts]
    order = np.argsort(values, kind="stable")  # each value's runs together, in pixel order
    bounds = np.searchsorted(values[order], np.arange(1, n + 2))
    order = order[bounds[0] : bounds[-1]]  # segments 1..n only
    return [{"size": size, "counts": c} for c in _encode_runs(starts[order], ends[order], np.diff(bounds), total)]


def _encode_runs(starts: np.ndarray, ends: np.ndarray, per_mask: np.ndarray, total: int) -> list[str]:
    """COCO counts of masks of ``total`` pixels, all at once, from their runs of set pixels as [start,
    end) in column-major order: the first ``per_mask[0]`` runs are mask 0's, in order, and so on.

    A mask's counts alternate clear and set runs, from a clear one (0 when it starts set), and end
    with the clear run after its last set one, unless it ends set (no set run: the whole mask clear)."""
    n = len(per_mask)
    first = np.concatenate(([0], np.cumsum(per_mask)[:-1]))  # each mask's first run
    has_runs = per_mask > 0
    previous_end = np.empty_like(ends)
    previous_end[1:] = ends[:-1]
    previous_end[first[has_runs]] = 0
    counts = np.empty(2 * len(starts), dtype=np.int64)
    counts[0::2] = starts - previous_end  # the clear run before each set run
    counts[1::2] = ends - starts
    last_end = np.zeros(n, dtype=np.int64)
    last_end[has_runs] = ends[(first + per_mask - 1)[has_runs]]
    closing = total - last_end
    closes = closing > 0
    counts = np.insert(counts, 2 * (first + per_mask)[closes], closing[closes])
    return _to_strings(counts, 2 * per_mask + closes)


def _to_strings(runs: np.ndarray, lengths: np.ndarray) -> list[str]:
    """pycocotools' ``rleToString`` for several masks' runs at once (``lengths`` runs each, in order):
    each run as its difference from the run two back (from a mask's fourth run on), in little-endian
    groups of 5 bits, the sign in the last group's top bit, 0x20 meaning "more groups follow", offset
    by 48 to printable characters."""
    if len(lengths) == 0:
        return []
    runs = np.asarray(runs, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    x = runs.copy()
    x[3:] -= runs[1:-2]
    # A mask's first three runs are kept as they are.
    for k in range(3):
        first = starts[(lengths > k) & (starts + k >= 3)] + k
        x[first] = runs[first]
    x = x.astype(np.int32)  # any count of a frame fits; half the bytes to go through
    # Groups each value needs, sign included: one more than its magnitude's bits (x for x >= 0, -x - 1
    # for x < 0) hold in whole groups of 5.
    groups = np.frexp(x ^ (x >> 31))[1] // 5 + 1
    ends = np.cumsum(groups)
    chars = np.empty(int(ends[-1]), dtype=np.uint8)
    first_char = ends - groups
    # Group k of every value that has one, written where it goes: one pass per group, over ever fewer values.
    idx = np.arange(len(x))
    k = 0
    while len(idx):
        more = groups[idx] > k + 1
        chars[first_char[idx] + k] = (((x[idx] >> (5 * k)) & 0x1F) | (more << 5)) + 48
        idx = idx[more]
        k += 1
    text = chars.tobytes().decode("ascii")
    cuts = np.cumsum(np.add.reduceat(groups, starts)).tolist()  # every mask has a run at least
    return [text[a:b] for a, b in zip([0, *cuts[:-1]], cuts)]


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
