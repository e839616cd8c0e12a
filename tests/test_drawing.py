"""Segment statistics and the overlay, checked against plain numpy on the trained sample model's output."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamseg.annotators import MaskAnnotator, class_color
from streamseg.inference.loading import load_model
from streamseg.inference.postprocess import postprocess
from streamseg.inference.preprocess import preprocess
from streamseg.sources import read_frames
from streamseg.types import Segmentation

from .conftest import SAMPLE_CLIP, SAMPLE_MODEL

pytestmark = pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")


@pytest.fixture(scope="module")
def outputs():
    loaded = load_model(str(SAMPLE_MODEL), dtype="float32")
    frames = [torch.from_numpy(f.image) for _, f in zip(range(3), read_frames(SAMPLE_CLIP))]
    with torch.inference_mode():
        out = loaded.model(pixel_values=preprocess(frames, loaded.spec, torch.float32))
    return frames, out, loaded.id2label


def _segments(outputs, task: str):
    frames, out, id2label = outputs
    sizes = [tuple(f.shape[:2]) for f in frames]
    return frames, postprocess(task, out.class_queries_logits, out.masks_queries_logits, sizes, id2label=id2label)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_areas_boxes_and_segment_map_agree_with_the_masks(outputs, task: str) -> None:
    _, segs = _segments(outputs, task)
    assert sum(len(s) for s in segs) > 0
    for seg in segs:
        masks = seg.masks.numpy()
        for k, mask in enumerate(masks):
            ys, xs = np.nonzero(mask)
            assert seg.areas[k] == mask.sum()
            assert seg.boxes[k] == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        if task == "instance":
            assert seg.segment_map is None  # instance masks may overlap: no single map
        else:
            assert seg.mask_stack is None and masks.sum(0).max() <= 1  # from the map: never overlapping
            expected = (masks * np.arange(1, len(masks) + 1)[:, None, None]).sum(0)
            np.testing.assert_array_equal(seg.segment_map.numpy(), expected)
            assert seg.masks is seg.masks  # made once


@pytest.mark.parametrize("at_once", [False, True], ids=["frame by frame (CPU)", "together (GPU)"])
def test_areas_and_boxes_of_a_mixed_batch_match_numpy(monkeypatch, at_once: bool) -> None:
    """Frames of two sizes, with no segment, with a segment that has no pixel, and with overlapping
    masks, in one batch; measured frame by frame as on a CPU, and together as on a GPU."""
    from streamseg import ops
    from streamseg.inference.postprocess import _boxes_and_areas

    if at_once:
        monkeypatch.setattr(ops, "frames_at_once", lambda device: True)

    g = torch.Generator().manual_seed(1)
    maps = [torch.randint(0, 4, (30, 50), generator=g, dtype=torch.int32),  # 3 segments
            torch.zeros((30, 50), dtype=torch.int32),  # no segment
            torch.randint(0, 2, (20, 70), generator=g, dtype=torch.int32),  # 1 segment, another size
            torch.randint(0, 3, (30, 50), generator=g, dtype=torch.int32) * 2]  # segments 2 and 4; 1 and 3 empty
    stacks = [torch.rand(2, 20, 70, generator=g) > 0.7, torch.rand(3, 20, 70, generator=g) > 0.9]
    counts = [3, 0, 1, 4, 2, 3]
    areas, boxes = _boxes_and_areas(counts, [*maps, None, None], [None] * 4 + stacks)
    masks = [[(m == k + 1).numpy() for k in range(n)] for m, n in zip(maps, counts)] + [list(s.numpy()) for s in stacks]
    for frame_masks, frame_areas, frame_boxes in zip(masks, areas, boxes):
        assert len(frame_areas) == len(frame_boxes) == len(frame_masks)
        for mask, area, box in zip(frame_masks, frame_areas, frame_boxes):
            assert area == mask.sum()
            if area == 0:
                assert box == (0, 0, 0, 0)
                continue
            ys, xs = np.nonzero(mask)
            assert box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert areas[3][0] == 0 and areas[3][1] > 0


def _reference_overlay(scene: np.ndarray, masks: np.ndarray, colours: list, opacity: float) -> np.ndarray:
    """The documented rule, written plainly: later segments over earlier ones, blended by ``opacity``,
    outlines (a pixel whose right or lower neighbour belongs elsewhere) in the upper segment's full colour."""
    top = np.zeros(scene.shape[:2], dtype=np.int64)
    for k, mask in enumerate(masks):
        top[mask] = k + 1
    table = np.array([(0, 0, 0), *colours], dtype=np.float32)
    out = scene.astype(np.float32)
    covered = top > 0
    out[covered] = out[covered] * np.float32(1 - opacity) + table[top[covered]] * np.float32(opacity)
    edge = np.zeros_like(covered)
    edge[:, :-1] |= top[:, :-1] != top[:, 1:]
    edge[:-1, :] |= top[:-1, :] != top[1:, :]
    owner = top.copy()
    owner[:, :-1] = np.maximum(owner[:, :-1], top[:, 1:])
    owner[:-1, :] = np.maximum(owner[:-1, :], top[1:, :])
    owner = np.maximum(top, owner)
    line = edge & (owner > 0)
    out[line] = table[owner[line]]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
@pytest.mark.parametrize("opacity", [0.5, 0.3])
def test_overlay_follows_the_rule_from_a_map_or_from_masks(outputs, task: str, opacity: float) -> None:
    frames, segs = _segments(outputs, task)
    annotator = MaskAnnotator(opacity=opacity, labels=False)
    for scene, seg in zip(frames, segs):
        expected = _reference_overlay(scene.numpy(), seg.masks.numpy(), [class_color(i) for i in seg.label_ids],
                                      opacity)
        drawn = annotator.annotate(scene, seg).numpy()
        from_masks = annotator.annotate(scene, dataclasses.replace(seg, segment_map=None, mask_stack=seg.masks)).numpy()
        np.testing.assert_array_equal(drawn, from_masks)
        assert np.abs(drawn.astype(int) - expected).max() <= 1  # float rounding only
        assert (drawn != scene.numpy()).any()


@pytest.mark.parametrize("n", [255, 256, 300])
def test_outlines_of_hundreds_of_segments_follow_the_rule(n: int) -> None:
    """Borders are found on a one-byte copy of the map up to 255 segments, on the map itself beyond."""
    side = 20
    segment_map = (torch.arange(side * side, dtype=torch.int32) % (n + 1)).view(side, side)
    segment_map = segment_map.repeat_interleave(3, 0).repeat_interleave(5, 1)  # 60x100, blocks of 3x5
    segment_map[segment_map > n] = 0
    labels = [k % 150 for k in range(n)]
    seg = Segmentation("panoptic", list(range(1, n + 1)), labels, [0.9] * n, [1] * n, [(0, 0, 1, 1)] * n,
                       size=(60, 100), segment_map=segment_map)
    scene = torch.randint(0, 256, (60, 100, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    drawn = MaskAnnotator(labels=False).annotate(scene, seg).numpy()
    expected = _reference_overlay(scene.numpy(), seg.masks.numpy(), [class_color(i) for i in labels], 0.5)
    assert np.abs(drawn.astype(int) - expected).max() <= 1  # float rounding only


def _crowded_frames() -> tuple[list[torch.Tensor], list[Segmentation]]:
    """Frames whose segments' boxes start close together, so their labels overlap, in one size; one
    frame with no segment among them."""
    from streamseg.inference.postprocess import _boxes_and_areas

    g = torch.Generator().manual_seed(2)
    scenes, segs = [], []
    for n in (6, 0, 3):
        segment_map = torch.zeros((90, 160), dtype=torch.int32)
        for k in range(n):  # nested rectangles from near the same corner, later ones on top
            segment_map[2 * k : 80 - 5 * k, 3 * k : 150 - 12 * k] = k + 1
        areas, boxes = _boxes_and_areas([n], [segment_map], [None])
        labels = [(7 * k) % 20 for k in range(n)]
        segs.append(Segmentation("panoptic", list(range(1, n + 1)), labels, [0.9] * n, areas[0], boxes[0],
                                 size=(90, 160), id2label={i: f"class {i}" for i in range(20)},
                                 segment_map=segment_map))
        scenes.append(torch.randint(0, 256, (90, 160, 3), dtype=torch.uint8, generator=g))
    return scenes, segs


def _reference_labels(drawn: np.ndarray, seg: Segmentation, annotator: MaskAnnotator) -> np.ndarray:
    """Labels written plainly, one by one over the drawn frame: each name's glyph at its box's top-left
    (kept inside the frame), a dark box behind white text, later labels over earlier ones."""
    out = drawn.copy()
    height, width = out.shape[:2]
    scale = max(1, round(height / 400))
    for name, box, area in zip(seg.labels, seg.boxes, seg.areas):
        if area == 0:
            continue
        glyph = annotator._canvas(name, scale)
        gh, gw = glyph.shape
        x, y = min(max(box[0], 0), max(width - gw, 0)), min(max(box[1], 0), max(height - gh, 0))
        h, w = min(gh, height - y), min(gw, width - x)
        alpha = glyph[:h, :w, None]
        region = out[y : y + h, x : x + w].astype(np.float32)
        out[y : y + h, x : x + w] = np.round(region * 0.35 * (1 - alpha) + 255.0 * alpha).astype(np.uint8)
    return out


@pytest.mark.parametrize("at_once", [False, True, "bounded"],
                         ids=["frame by frame (CPU)", "together (GPU)", "together, two at most"])
def test_a_batch_is_drawn_as_each_frame_alone(outputs, monkeypatch, at_once: bool | str) -> None:
    """Frames drawn together (as on a GPU) or one by one (as on the CPU) get the bytes of the plain
    rule: the overlay of each frame alone, then its labels one by one, overlapping labels included."""
    from streamseg import ops
    from streamseg.annotators import masks

    if at_once:
        monkeypatch.setattr(ops, "frames_at_once", lambda device: True)
    if at_once == "bounded":
        monkeypatch.setattr(masks, "MOST_PIXELS", 2 * 90 * 160)  # the crowded frames go two, then one
    frames, segs = _segments(outputs, "panoptic")
    crowded_scenes, crowded_segs = _crowded_frames()
    scenes, segs = [*frames, *crowded_scenes], [*segs, *crowded_segs]
    annotator = MaskAnnotator(color_by="instance")
    drawn = annotator.annotate_batch(scenes, segs)
    bare = MaskAnnotator(color_by="instance", labels=False)
    for scene, seg, image in zip(scenes, segs, drawn):
        expected = _reference_labels(bare.annotate(scene, seg).numpy(), seg, annotator)
        np.testing.assert_array_equal(image.numpy(), expected)
    assert not torch.equal(drawn[-3], crowded_scenes[0]) and torch.equal(drawn[-2], crowded_scenes[1])


def test_frames_go_together_on_a_gpu_within_a_bound() -> None:
    from streamseg.ops import batch_chunks

    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert batch_chunks([3, 5, 7], cpu, [1, 1, 1], 10) == [[3], [5], [7]]
    assert batch_chunks([3, 5, 7], gpu) == [[3, 5, 7]]
    assert batch_chunks([3, 5, 7], gpu, [4, 4, 4], 10) == [[3, 5], [7]]
    assert batch_chunks([1, 2, 3, 4], gpu, [0, 30, 2, 8], 10) == [[1], [2], [3, 4]]  # one over the bound alone


@pytest.mark.parametrize("count", [7, 300])
def test_the_last_mask_wins_the_index_map_at_once_as_one_by_one(count: int) -> None:
    """A GPU finds each pixel's last mask in one op, the CPU mask by mask (in bytes under 256 masks): both
    must agree with filling the masks in order, whatever the stack's layout."""
    from streamseg.types import column_major, last_mask_index

    masks = torch.rand(count, 33, 41, generator=torch.Generator().manual_seed(4)) > (0.6 if count < 10 else 0.995)
    masks[3] = False  # an empty mask
    filled = torch.zeros((33, 41), dtype=torch.int32)
    for k, mask in enumerate(masks):
        filled[mask] = k + 1
    for stack in (masks, column_major(masks)):
        seg = Segmentation("instance", list(range(count)), [1] * count, [0.9] * count, [0] * count,
                           [(0, 0, 0, 0)] * count, size=(33, 41), mask_stack=stack)
        one_by_one = seg.index_map()  # the CPU's way
        assert one_by_one.dtype == torch.int32 and torch.equal(one_by_one, filled)
        assert torch.equal(last_mask_index(stack), filled)
    assert 4 not in filled.unique().tolist() and (count < 256 or int(filled.max()) > 255)


def test_a_segmentation_checks_its_parts() -> None:
    one = torch.zeros((4, 6), dtype=torch.int32)
    one[1:3, 2:5] = 1
    seg = Segmentation("panoptic", [1], [3], [0.9], [6], [(2, 1, 3, 2)], size=(4, 6), segment_map=one)
    assert seg.masks.shape == (1, 4, 6) and int(seg.masks.sum()) == 6
    assert seg.label_map()[1, 2] == 3 and seg.label_map()[0, 0] == -1
    empty = Segmentation("panoptic", [], [], [], [], [], size=(4, 6))
    assert empty.masks.shape == (0, 4, 6) and not empty.index_map().any()
    with pytest.raises(ValueError, match="segment_map must be"):
        Segmentation("panoptic", [1], [3], [0.9], [6], [(2, 1, 3, 2)], size=(5, 6), segment_map=one)
    with pytest.raises(ValueError, match="mask_stack must be"):
        Segmentation("instance", [0], [3], [0.9], [6], [(2, 1, 3, 2)], size=(4, 6), mask_stack=one[None, :3] > 0)
    with pytest.raises(ValueError, match="need a segment_map or a mask_stack"):
        Segmentation("instance", [0], [3], [0.9], [6], [(2, 1, 3, 2)], size=(4, 6))


def test_blend_table_gives_the_bytes_of_the_float_formula() -> None:
    from streamseg.annotators.masks import _blend

    g = torch.Generator().manual_seed(0)
    scene = torch.randint(0, 256, (40, 60, 3), dtype=torch.uint8, generator=g)
    index = torch.randint(0, 9, (40, 60), dtype=torch.int32, generator=g)
    keep = torch.rand(9, 1, generator=g)
    paint = torch.rand(9, 3, generator=g) * 255
    expected = scene.float() * keep[index.long()] + paint[index.long()]
    np.testing.assert_array_equal(_blend(scene, index, keep, paint).numpy(),
                                  expected.round().clamp(0, 255).to(torch.uint8).numpy())


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_dilation_is_a_square_max_filter(radius: int) -> None:
    from streamseg.annotators.masks import _dilate

    mask = torch.rand(37, 53, generator=torch.Generator().manual_seed(radius)) < 0.03
    size = 2 * radius + 1
    expected = torch.nn.functional.max_pool2d(mask[None, None].float(), size, 1, radius)[0, 0] > 0
    assert torch.equal(_dilate(mask, radius), expected)



def _drawn(**render) -> tuple:
    """The sample's first frame drawn with these render settings, and its segmentation."""
    import streamseg

    from .conftest import ROOT, SAMPLE_CLIP

    cfg = streamseg.load_config(ROOT / "configs" / "sample.yaml", sources=(str(SAMPLE_CLIP),), batching__batch_size=1,
                                **{f"render__{k}": v for k, v in render.items()})
    with streamseg.Pipeline(cfg, annotate=True, masks_to_host=True) as pipeline:
        result = next(iter(pipeline.results()))
        pipeline.stop()
    return result.annotated, result.segmentation


def test_boxes_scores_and_line_width_are_drawn_when_asked() -> None:
    from streamseg.annotators.masks import class_color

    plain, seg = _drawn()
    assert len(seg) > 0
    boxed, _ = _drawn(boxes=True, line_width=3)
    bottoms = [(y + h - 1, x + w // 2, class_color(label)) for (x, y, w, h), label, area
               in zip(seg.boxes, seg.label_ids, seg.areas) if area and w > 6 and h > 6]
    assert bottoms and any(tuple(boxed[row, col]) == colour for row, col, colour in bottoms)
    assert not np.array_equal(plain, boxed)
    # Scores lengthen the labels, and only the labels.
    assert not np.array_equal(_drawn(show_scores=True)[0], plain)
    assert np.array_equal(_drawn(labels=False, show_scores=True)[0], _drawn(labels=False)[0])
    # A 360-row frame's outlines are 1 pixel wide by default; 4 covers more.
    thin, thick = _drawn(line_width=1)[0], _drawn(line_width=4)[0]
    assert np.array_equal(thin, plain)
    bare = _drawn(outlines=False)[0]
    assert np.any(thick != bare, axis=2).sum() > 2 * np.any(thin != bare, axis=2).sum()
