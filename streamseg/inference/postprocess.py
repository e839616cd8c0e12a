"""Batched Mask2Former post-processing in torch, equal to transformers' post_process_* functions.

Each function takes a whole batch of model outputs and returns one :class:`Segmentation` per frame.
They follow transformers step for step, quirks included (mask logits first resized to 384x384;
instance masks are ``logits > 0`` whatever ``mask_threshold`` says; panoptic compares score-weighted
probabilities with ``mask_threshold``; the panoptic segment counter of ``compute_segments``), but
replace the per-query Python loops with tensor ops, so a batch costs a few small device-to-host copies
instead of one sync per query, and resize only the masks of queries that can still be kept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..ops import MOST_PIXELS, batch_chunks, grouped, lookup, stacked, upload_each
from ..types import Segmentation

__all__ = ["postprocess", "semantic", "instance", "panoptic"]

HF_MASK_SIZE = (384, 384)  # transformers resizes mask logits to this before anything else
# Instance candidates resized at once on a GPU, about 2 MB of temporaries each at 384x384: at most what
# one frame of a 100-query model could take before frames went together.
MOST_PAIRS = 128
# Values a full-size resize makes at once (256 MB of float32): a 150-class model's semantic scores at 4K
# are 1.2G values, 5 GB, and a panoptic frame's kept queries up to 100 maps of the frame's size.
MOST_VALUES = 1 << 26


def _argmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x.argmax(dim)``, through ``max``: the same first-maximum indices, many times faster on the CPU
    for a reduction across a short leading dimension."""
    return x.max(dim).indices


def _any(masks: torch.Tensor, dim: int) -> torch.Tensor:
    """``masks.any(dim)`` for bool masks, as the largest byte: the same answer, and on the CPU many times
    faster (torch's ``any`` reduces bools one at a time)."""
    return masks.view(torch.uint8).amax(dim).view(torch.bool)


def _first_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x.max(1)`` for (N, C, H, W) ``x``: each pixel's largest value over the channels, and the first
    channel that holds it (uint8 for up to 256 channels on the CPU). On the CPU, the largest values alone
    and then a scan that counts the channels before the first to reach them: ``max`` with indices reduces
    across the strided channels slowly. A pixel
    with a NaN gets index 0 here, not the NaN's channel."""
    channels = x.shape[1]
    if x.device.type != "cpu" or channels == 1:
        return x.max(1)
    best = x.amax(1)
    before = x[:, 0] < best  # still before the first channel that reaches the maximum
    index = before.to(torch.uint8 if channels <= 256 else torch.int32)
    below = torch.empty_like(before)
    for c in range(1, channels - 1):  # not the last: where no earlier channel reached the maximum, it does
        before.logical_and_(torch.lt(x[:, c], best, out=below))
        index.add_(before)
    return best, index


def _resized_argmax(
    values: torch.Tensor, size: tuple[int, int], *, weights: torch.Tensor | None = None,
    at_least: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For (N, C, h, w) ``values`` (N frames of C channels) resized to ``size`` (bilinear, as transformers
    resizes them) and multiplied by ``weights`` (N, C): each frame's first-maximum index over its channels,
    as (N, H, W) integers (see :func:`_first_max`); with ``at_least``, also each channel's count of pixels
    at or above it, as (N * C,).

    Channels are resized a chunk at a time, within MOST_VALUES: each channel resizes on its own and the
    first maximum wins across chunks as within one, so the result is the same as all at once.
    """
    frames, channels = values.shape[:2]
    if not channels:
        raise ValueError("no channel to take the maximum of")
    chunks = -(-frames * channels * size[0] * size[1] // MOST_VALUES)  # as few as the bound allows, of even sizes
    per_chunk = -(-channels // chunks)
    best = winner = None
    counts = []
    for start in range(0, channels, per_chunk):
        up = F.interpolate(values[:, start : start + per_chunk], size=size, mode="bilinear", align_corners=False)
        if weights is not None:
            up *= weights[:, start : start + per_chunk, None, None]
        if at_least is not None:
            counts.append(_count(up.flatten(0, 1) >= at_least).view(frames, -1))
        chunk_best, chunk_winner = _first_max(up)
        if best is None:
            best, winner = chunk_best, chunk_winner
            if winner.dtype == torch.uint8 and channels > 256:  # later chunks' indices would not fit
                winner = winner.to(torch.int32)
        else:
            later = chunk_best > best  # strictly: a tie keeps the earlier channel
            best = torch.maximum(best, chunk_best)
            winner = torch.where(later, chunk_winner.to(winner.dtype) + start, winner)
        del up
    if at_least is None:
        return winner, None
    return winner, (counts[0] if len(counts) == 1 else torch.cat(counts, dim=1)).flatten()


def _masks_384(mask_logits: torch.Tensor) -> torch.Tensor:
    return F.interpolate(mask_logits.float(), size=HF_MASK_SIZE, mode="bilinear", align_corners=False)


def _count(masks: torch.Tensor) -> torch.Tensor:
    """Pixels set in each of (N, H, W) bool masks, as int32. On the CPU numpy counts set bytes several
    times faster than torch sums them."""
    if masks.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(masks.flatten(1).numpy(), axis=1).astype(np.int32))
    return masks.flatten(1).sum(1, dtype=torch.int32)


def _stats_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(N, 5) int64 rows of area, x0, y0, x1, y1 for (N, H, W) masks that may overlap."""
    return _stats(_any(masks, 2), _any(masks, 1), _count(masks))


def _stats_from_maps(segment_maps: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """The same for (B, H, W) maps of non-overlapping segments (k + 1 where segment k is), all frames at
    once: (B, N, 5) rows, N the largest count, rows past a frame's count all zero. Per-row and per-column
    histograms of the maps instead of N full-size masks, one of each for the whole batch."""
    frames, height, width = segment_maps.shape
    index = segment_maps.to(torch.int32)  # int32 keys: bincount reads half the bytes of int64
    bins = max(counts) + 1
    device = index.device
    # Row r of frame f counts its values in bins [(f * H + r) * bins, ... + bins); likewise for columns.
    row_base = torch.arange(frames * height, dtype=torch.int32, device=device).view(frames, height, 1) * bins
    col_base = torch.arange(frames * width, dtype=torch.int32, device=device).view(frames, 1, width) * bins
    rows = torch.bincount((index + row_base).flatten(), minlength=frames * height * bins)
    cols = torch.bincount((index + col_base).flatten(), minlength=frames * width * bins)
    rows = rows.view(frames, height, bins)[..., 1:].transpose(1, 2)  # (B, N, H)
    cols = cols.view(frames, width, bins)[..., 1:].transpose(1, 2)  # (B, N, W)
    return _stats(rows > 0, cols > 0, rows.sum(-1))


def _stats(rows: torch.Tensor, cols: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """Rows of area and box corners from (..., N, H) and (..., N, W) occupancy."""
    h, w = rows.shape[-1], cols.shape[-1]
    y0 = _argmax(rows.to(torch.uint8), -1)
    y1 = h - 1 - _argmax(rows.flip(-1).to(torch.uint8), -1)
    x0 = _argmax(cols.to(torch.uint8), -1)
    x1 = w - 1 - _argmax(cols.flip(-1).to(torch.uint8), -1)
    return torch.stack([area.long(), x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=-1)


def _boxes_and_areas(
    counts: list[int], maps: list[torch.Tensor | None], stacks: list[torch.Tensor | None],
) -> tuple[list[list[int]], list[list[tuple[int, int, int, int]]]]:
    """Area and (x, y, w, h) box of every segment of every frame, with one device-to-host copy. On a GPU
    the frames of one size are measured together: a batch costs the same few ops as one frame."""
    groups = grouped(  # frames with segments, by size and by map or masks
        (tuple((m if m is not None else s).shape[-2:]), m is not None) if n else None
        for n, m, s in zip(counts, maps, stacks))
    parts, first_row = [], {}  # stats tensors to copy; frame -> its first row in their concatenation
    row = 0
    for ((height, width), from_map), members in groups.items():
        device = (maps[members[0]] if from_map else stacks[members[0]]).device
        for chunk in batch_chunks(members, device, [height * width] * len(members), MOST_PIXELS):
            if from_map:  # (B, N, 5), N the chunk's largest count
                stats = _stats_from_maps(stacked([maps[b] for b in chunk]), [counts[b] for b in chunk])
                rows_each = [stats.shape[1]] * len(chunk)
                stats = stats.flatten(0, 1)
            else:  # each mask on its own: the chunk's masks together
                stats = _stats_from_masks(torch.cat([stacks[b] for b in chunk]) if len(chunk) > 1 else stacks[chunk[0]])
                rows_each = [counts[b] for b in chunk]
            for b, rows in zip(chunk, rows_each):
                first_row[b] = row
                row += rows
            parts.append(stats)
    flat = torch.cat(parts).cpu().tolist() if parts else []
    areas, boxes = [], []
    for b, n in enumerate(counts):
        rows_ = flat[first_row[b] : first_row[b] + n] if n else []
        areas.append([r[0] for r in rows_])
        boxes.append([(r[1], r[2], r[3], r[4]) if r[0] > 0 else (0, 0, 0, 0) for r in rows_])
    return areas, boxes


def _finish(
    task: str,
    sizes: Sequence[tuple[int, int]],
    ids: list[list[int]],
    labels: list[list[int]],
    scores: list[list[float | None]],
    id2label: dict[int, str],
    *,
    maps: list[torch.Tensor | None] | None = None,
    stacks: list[torch.Tensor | None] | None = None,
    queries: list[list[int]] | None = None,
) -> list[Segmentation]:
    """One Segmentation per frame, from a segment map (segments that never overlap) or a mask stack."""
    maps = maps or [None] * len(sizes)
    stacks = stacks or [None] * len(sizes)
    queries = queries or [None] * len(sizes)
    areas, boxes = _boxes_and_areas([len(i) for i in ids], maps, stacks)
    return [
        Segmentation(task, i, lb, s, areas=a, boxes=b, size=tuple(size), id2label=id2label, segment_map=sm,
                     mask_stack=st, queries=q)
        for size, i, lb, s, a, b, sm, st, q in zip(sizes, ids, labels, scores, areas, boxes, maps, stacks, queries)
    ]


def semantic(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_sizes: Sequence[tuple[int, int]],
    id2label: dict[int, str] | None = None,
) -> list[Segmentation]:
    """``post_process_semantic_segmentation``: one segment per class present, score None."""
    masks = _masks_384(mask_logits).sigmoid()
    classes = class_logits.float().softmax(-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
    num_classes = classes.shape[-1]
    maps: list[torch.Tensor] = [torch.empty(0)] * len(target_sizes)
    for i, size in enumerate(target_sizes):  # per frame, like transformers: (C, H, W) at full size is large
        maps[i] = _resized_argmax(scores[i][None], tuple(size))[0][0]
    present = torch.stack([torch.bincount(m.flatten(), minlength=num_classes) > 0 for m in maps]).cpu()
    present_labels = [row.nonzero().flatten() for row in present]
    positions = []  # class -> its segment's index + 1
    for labels in present_labels:
        position = torch.zeros(num_classes, dtype=torch.int32)
        position[labels] = torch.arange(1, len(labels) + 1, dtype=torch.int32)
        positions.append(position)
    ids = [labels.tolist() for labels in present_labels]
    segment_maps = [lookup(position, m) for m, position in zip(maps, upload_each(positions, class_logits.device))]
    return _finish("semantic", target_sizes, ids, ids, [[None] * len(i) for i in ids], id2label or {},
                   maps=segment_maps)


def instance(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_sizes: Sequence[tuple[int, int]],
    *,
    threshold: float = 0.5,
    id2label: dict[int, str] | None = None,
) -> list[Segmentation]:
    """``post_process_instance_segmentation``: top-Q (query, class) pairs, masks may overlap.

    Segments are ordered by score (transformers keeps ``topk(sorted=False)`` order, which differs by device).
    """
    queries = class_logits.shape[1]
    num_classes = class_logits.shape[-1] - 1
    scores = class_logits.float().softmax(-1)[..., :-1].flatten(1)
    top_scores, top_index = scores.topk(queries, dim=1, sorted=False)
    # A pair's final score is its class score times a mean mask probability (< 1), so pairs already under
    # the threshold cannot be kept: only the others' masks are resized (each mask resizes independently).
    candidate_h, index_h = torch.stack([(top_scores >= threshold).long(), top_index]).cpu().tolist()
    pairs_h = [[p for p, c in enumerate(row) if c] for row in candidate_h]  # per frame: its candidate pairs
    device = mask_logits.device

    # Each pair's mask is resized, scored and checked on its own: the pairs of a chunk of frames of one
    # size go together (one frame at a time on the CPU, see batch_chunks), at most MOST_PAIRS of them.
    chunks = [c for members in grouped(tuple(size) for size in target_sizes).values()
              for c in batch_chunks(members, device, [len(pairs_h[b]) for b in members], MOST_PAIRS)]
    chunks = [c for c in chunks if any(pairs_h[b] for b in c)]
    binaries, checks = [], []
    for chunk in chunks:
        frame = [b for b in chunk for _ in pairs_h[b]]
        pair = [p for b in chunk for p in pairs_h[b]]
        query = [index_h[b][p] // num_classes for b in chunk for p in pairs_h[b]]
        frame_d, pair_d, query_d = upload_each([torch.tensor(frame + pair + query, dtype=torch.int64)],
                                               device)[0].split(len(frame))
        picked = _masks_384(mask_logits[frame_d, query_d][None])[0]
        binary = picked > 0
        mask_scores = (picked.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        final = top_scores[frame_d, pair_d] * mask_scores
        _, _, rows_used, cols_used = _nearest_lookup(tuple(target_sizes[chunk[0]]), device)
        # Nearest upsampling is a gather of source rows and columns: the mask is empty after it exactly
        # when the gathered rows and columns hold no pixel.
        nonempty = _any(_gathered(binary, rows_used, cols_used).flatten(1), 1)
        binaries.append(binary)
        checks.append(torch.stack([final, nonempty.float()], dim=1))
    checks_h = torch.cat(checks).cpu().tolist() if checks else []

    # Per frame, the pairs kept, best first (a stable sort: ties keep their order), as rows of its
    # chunk's masks. torch compares float32 scores with the threshold cast to float32: so does this.
    threshold_32 = float(np.float32(threshold))
    kept_rows: list[list[int]] = [[] for _ in target_sizes]
    labels: list[list[int]] = [[] for _ in target_sizes]
    queries_kept: list[list[int]] = [[] for _ in target_sizes]
    out_scores: list[list[float | None]] = [[] for _ in target_sizes]
    row = 0
    for chunk in chunks:
        start = row
        for b in chunk:
            mine = range(row, row + len(pairs_h[b]))
            row = mine.stop
            kept = sorted((r for r in mine if checks_h[r][1] > 0 and checks_h[r][0] >= threshold_32),
                          key=lambda r: -checks_h[r][0])
            kept_rows[b] = [r - start for r in kept]
            labels[b] = [index_h[b][pairs_h[b][r - mine.start]] % num_classes for r in kept]
            queries_kept[b] = [index_h[b][pairs_h[b][r - mine.start]] // num_classes for r in kept]
            out_scores[b] = [round(checks_h[r][0], 6) for r in kept]
    out_masks = [torch.zeros((0, *size), dtype=torch.bool, device=device) for size in target_sizes]
    for chunk, binary in zip(chunks, binaries):
        rows, cols, _, _ = _nearest_lookup(tuple(target_sizes[chunk[0]]), device)
        kept_d = upload_each([torch.tensor([r for b in chunk for r in kept_rows[b]], dtype=torch.int64)], device)[0]
        masks = _gathered(binary.index_select(0, kept_d), rows, cols)
        for b, frame_masks in zip(chunk, masks.split([len(kept_rows[b]) for b in chunk])):
            out_masks[b] = frame_masks
    ids = [list(range(len(kept))) for kept in kept_rows]
    return _finish("instance", target_sizes, ids, labels, out_scores, id2label or {}, stacks=out_masks,
                   queries=queries_kept)


def _gathered(masks: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``masks[:, rows][:, :, cols]`` for (N, h, w) bool masks, through ``index_select`` on bytes: faster
    on the CPU than advanced indexing, which builds an index for every element."""
    return masks.view(torch.uint8).index_select(1, rows).index_select(2, cols).view(torch.bool)


@functools.lru_cache(maxsize=64)
def _nearest_lookup(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Source rows and columns of a nearest resize from 384x384 to ``size`` on ``device`` (computed there,
    as transformers does), and the distinct ones; cached, so a batch never waits for them."""
    rows = _nearest_index(HF_MASK_SIZE[0], size[0], device)
    cols = _nearest_index(HF_MASK_SIZE[1], size[1], device)
    return rows, cols, rows.unique(), cols.unique()


def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    grid = torch.arange(src, dtype=torch.float32, device=device).view(1, 1, src)
    return F.interpolate(grid, size=dst, mode="nearest")[0, 0].long()


def panoptic(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_sizes: Sequence[tuple[int, int]],
    *,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    label_ids_to_fuse: Sequence[int] = (),
    id2label: dict[int, str] | None = None,
) -> list[Segmentation]:
    """``post_process_panoptic_segmentation``: non-overlapping segments, ids from 1.

    Queries of a class in ``label_ids_to_fuse`` share one segment; such a segment is reported once.
    """
    num_labels = class_logits.shape[-1] - 1
    pred_scores, pred_labels = class_logits.float().softmax(-1).max(-1)
    keep = (pred_labels != num_labels) & (pred_scores > threshold)
    # One copy to the host, read as lists: the per-query loop below then costs no tensor ops.
    scores_h, labels_h, keep_h = torch.stack([pred_scores, pred_labels.float(), keep.float()]).cpu().tolist()
    kept_h = [[q for q, k in enumerate(row) if k] for row in keep_h]
    # torch compares float32 scores with the threshold cast to float32: so does the check below.
    mask_threshold_32 = float(np.float32(mask_threshold))

    # A segment needs pixels where score * probability >= mask_threshold, and probabilities are at most
    # 1: a frame none of whose kept queries scores that high has no segment in transformers either, and
    # costs no work (nor, on a GPU, a launch) here.
    work = {b for b, kept in enumerate(kept_h) if kept and max(scores_h[b][q] for q in kept) >= mask_threshold_32}
    # The frames with work, by size; on a GPU those of a size go together (see batch_chunks), each padded to
    # the most kept queries among them with copies of its first: a copy ties with that query at every pixel,
    # where the first maximum wins, so it wins none, and its counts are not read.
    device = mask_logits.device
    chunks, hosted = [], []
    for size, members in grouped(tuple(size) if b in work else None for b, size in enumerate(target_sizes)).items():
        most = max(len(kept_h[b]) for b in members)
        for chunk in batch_chunks(members, device, [most * size[0] * size[1]] * len(members), MOST_VALUES):
            width = max(len(kept_h[b]) for b in chunk)
            padded = [kept_h[b] + [kept_h[b][0]] * (width - len(kept_h[b])) for b in chunk]
            index = [b for b in chunk for _ in range(width)] + [q for row in padded for q in row]
            chunks.append((size, chunk, width))
            hosted.append(torch.tensor(index, dtype=torch.int64))
    winners: list[torch.Tensor | None] = [None] * len(target_sizes)
    first_column: dict[int, int] = {}  # frame -> where its kept queries' area and count start in `stats`
    parts, column = [], 0
    for (size, chunk, width), index in zip(chunks, upload_each(hosted, device)):
        rows = len(chunk) * width
        frame_d, query_d = index[:rows], index[rows : 2 * rows]
        weights = pred_scores[frame_d, query_d]
        # Only kept queries: each resizes alone.
        probs = _masks_384(mask_logits[frame_d, query_d].view(len(chunk), width, *mask_logits.shape[-2:])).sigmoid()
        winner, original = _resized_argmax(probs, size, weights=weights.view(len(chunk), width),
                                           at_least=mask_threshold)
        keys = winner
        if len(chunk) > 1:  # frame c's queries counted in bins [c * width, (c + 1) * width)
            keys = winner + (torch.arange(len(chunk), device=device) * width).view(-1, 1, 1)
        area = torch.bincount(keys.flatten(), minlength=rows)
        parts.append(torch.stack([area, original]))
        for c, b in enumerate(chunk):
            winners[b] = winner[c]
            first_column[b] = column + c * width
        column += rows
    stats = torch.cat(parts, dim=1).cpu().tolist() if parts else [[], []]

    fuse = set(label_ids_to_fuse)
    ids, labels, out_scores, queries = [], [], [], []
    positions: dict[int, torch.Tensor] = {}  # by frame with a segment map
    for b in range(len(target_sizes)):
        ids.append([]), labels.append([]), out_scores.append([]), queries.append([])
        if winners[b] is None:
            continue
        kept = kept_h[b]
        first = first_column[b]
        area, original = stats[0][first : first + len(kept)], stats[1][first : first + len(kept)]
        lut = [0] * len(kept)
        seg_ids: list[int] = []
        seg_labels: list[int] = []
        seg_scores: list[float | None] = []
        seg_queries: list[int] = []
        current, stuff_memory = 0, {}
        for k, q in enumerate(kept):
            label = int(labels_h[b][q])
            if not (area[k] > 0 and original[k] > 0 and area[k] / original[k] > overlap_threshold):
                continue
            # transformers' compute_segments counter, reproduced as is (a fused id can be reused later).
            if label in stuff_memory:
                current = stuff_memory[label]
            else:
                current += 1
            lut[k] = current
            if current not in seg_ids:
                seg_ids.append(current)
                seg_labels.append(label)
                seg_scores.append(round(scores_h[b][q], 6))
                seg_queries.append(q)
            if label in fuse:
                stuff_memory[label] = current
        # Kept query -> its segment's index + 1, 0 for none.
        positions[b] = torch.tensor([seg_ids.index(i) + 1 if i else 0 for i in lut], dtype=torch.int32)
        ids[b], labels[b], out_scores[b], queries[b] = seg_ids, seg_labels, seg_scores, seg_queries

    on_device = dict(zip(positions, upload_each(list(positions.values()), mask_logits.device)))
    segment_maps = [None if winner is None else lookup(on_device[b], winner) for b, winner in enumerate(winners)]
    return _finish("panoptic", target_sizes, ids, labels, out_scores, id2label or {}, maps=segment_maps,
                   queries=queries)


def postprocess(
    task: str,
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    target_sizes: Sequence[tuple[int, int]],
    *,
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.8,
    label_ids_to_fuse: Sequence[int] = (),
    id2label: dict[int, str] | None = None,
) -> list[Segmentation]:
    """Dispatch to the task's post-processing with transformers' defaults."""
    if task == "semantic":
        return semantic(class_logits, mask_logits, target_sizes, id2label)
    if task == "instance":
        return instance(class_logits, mask_logits, target_sizes, threshold=threshold, id2label=id2label)
    if task == "panoptic":
        return panoptic(
            class_logits, mask_logits, target_sizes, threshold=threshold, mask_threshold=mask_threshold,
            overlap_threshold=overlap_threshold, label_ids_to_fuse=label_ids_to_fuse, id2label=id2label,
        )
    raise ValueError(f"unknown task {task!r}")
