"""streamseg's preprocessing and post-processing against transformers' Mask2FormerImageProcessorPil.

Both run on the same decoded frames; the reference preprocesses with PIL and post-processes with
transformers' own functions, streamseg does both in torch. Instance and panoptic results are compared
as sets of (label, mask) with mask IoU, because ``topk(sorted=False)`` order is not stable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Mask2FormerForUniversalSegmentation

from streamseg.inference.postprocess import instance, panoptic, semantic
from streamseg.inference.preprocess import PreprocessSpec, _size_with_aspect_ratio, preprocess, resized_size
from streamseg.sources import read_frames

from .conftest import SAMPLE_CLIP, SAMPLE_MODEL, reference_processor, write_clip


def _setup(model_dir: Path, clip: Path, count: int = 3):
    cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
    processor = reference_processor(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
    model = Mask2FormerForUniversalSegmentation.from_pretrained(model_dir).float().eval()
    frames = [f.image for _, f in zip(range(count), read_frames(clip))]
    return processor, model, PreprocessSpec.from_dict(cfg), frames


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _assert_same_segments(ref: list[tuple[int, torch.Tensor]], ours: list[tuple[int, torch.Tensor]]) -> None:
    """Every reference segment has a distinct match of the same label with IoU >= 0.97, and vice versa."""
    assert len(ref) == len(ours), f"{len(ref)} reference segments, {len(ours)} ours"
    unmatched = list(range(len(ours)))
    for label, mask in ref:
        best = max(unmatched, key=lambda j: (ours[j][0] == label, _iou(mask, ours[j][1])), default=None)
        assert best is not None
        assert ours[best][0] == label and _iou(mask, ours[best][1]) >= 0.97, f"no match for a label {label} segment"
        unmatched.remove(best)


@pytest.fixture(scope="module")
def odd_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("eq") / "eq.mp4", width=150, height=100, frames=3)


@pytest.fixture(params=["tiny_model", "tiny_model_fixed"])
def setup(request: pytest.FixtureRequest, odd_clip: Path):
    return _setup(request.getfixturevalue(request.param), odd_clip)


def test_resized_size_matches_transformers() -> None:
    try:
        from transformers.image_transforms import get_size_with_aspect_ratio
    except ImportError:  # transformers 4.x keeps it with DETR's processor
        from transformers.models.detr.image_processing_detr import get_size_with_aspect_ratio

    for h, w in [(360, 640), (1080, 1920), (100, 150), (481, 317), (800, 1333), (2000, 300)]:
        for short, long in [(800, 1333), (384, 640), (96, 160)]:
            assert _size_with_aspect_ratio(h, w, short, long) == get_size_with_aspect_ratio((h, w), short, long)


def test_pixel_values_match_pil(setup) -> None:
    processor, _, spec, frames = setup
    ref = processor(images=frames, return_tensors="pt")["pixel_values"]
    ours = preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32)
    assert ours.shape == ref.shape
    assert ours.shape[-2:] == resized_size(frames[0].shape[0], frames[0].shape[1], spec)
    # torch's antialiased uint8 resize follows PIL's filter but can round a value to the neighbouring level.
    level = 1 / 255 / min(spec.image_std)
    diff = (ours - ref).abs()
    assert diff.max().item() <= level + 1e-4
    assert diff.mean().item() < 0.3 * level


def test_float_resize_path_is_within_one_level() -> None:
    """The path accelerators take (float resize, rounded) stays within one uint8 level of PIL."""
    from PIL import Image

    image = (np.random.default_rng(0).random((100, 150, 3)) * 255).astype(np.uint8)
    ref = np.asarray(Image.fromarray(image).resize((96, 64), Image.BILINEAR)).astype(int)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    y = torch.nn.functional.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False, antialias=True)
    ours = y.round().clamp(0, 255)[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_preprocessing_makes_no_tensor_from_python_numbers_once_warm() -> None:
    """On a GPU such a tensor is a copy from pageable memory, which waits for the whole stream: made per
    batch, it held the infer thread until the previous forward pass had ended (test_cuda checks the
    whole of the infer thread's half for waits; this is the part a CPU can see)."""
    from torch.overrides import TorchFunctionMode

    class FromPython(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.made: list = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.tensor, torch.as_tensor) and args and isinstance(args[0], (list, tuple, int, float)):
                self.made.append(args[0])
            return func(*args, **(kwargs or {}))

    images = [torch.zeros(100, 150, 3, dtype=torch.uint8), torch.zeros(90, 160, 3, dtype=torch.uint8)]
    spec = PreprocessSpec(shortest_edge=64, longest_edge=128)
    first = preprocess(images, spec, torch.float32)
    with torch.inference_mode(), FromPython() as mode:
        again = preprocess(images, spec, torch.float32)
    assert mode.made == []
    assert torch.equal(first, again)


def test_preprocessing_hands_back_the_layout_asked_for() -> None:
    """One size or several, resized or not: ``pixel_values`` in the layout the model runs in."""
    spec = PreprocessSpec(shortest_edge=64, longest_edge=128)
    one = [torch.zeros(100, 150, 3, dtype=torch.uint8)] * 2
    mixed = [one[0], torch.zeros(90, 160, 3, dtype=torch.uint8)]
    as_is = [torch.zeros(64, 96, 3, dtype=torch.uint8)] * 2
    for images in (one, mixed, as_is):
        assert preprocess(images, spec, torch.float32).is_contiguous()
        last = preprocess(images, spec, torch.float32, torch.channels_last)
        assert last.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(last, preprocess(images, spec, torch.float32))


def _outputs(setup):
    processor, model, spec, frames = setup
    with torch.no_grad():
        pixel_values = preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32)
        out = model(pixel_values=pixel_values)
    sizes = [f.shape[:2] for f in frames]
    return processor, out, sizes


def test_semantic_matches(setup) -> None:
    processor, out, sizes = _outputs(setup)
    ref = processor.post_process_semantic_segmentation(out, target_sizes=sizes)
    ours = semantic(out.class_queries_logits, out.masks_queries_logits, sizes)
    for r, o in zip(ref, ours):
        assert (r == o.label_map()).float().mean().item() >= 0.995
        assert sorted(o.label_ids) == sorted(torch.unique(r).tolist())
        assert all(s is None for s in o.scores)


@pytest.mark.parametrize("threshold", [0.0, 0.04])
def test_instance_matches(setup, threshold: float) -> None:
    processor, out, sizes = _outputs(setup)
    ref = processor.post_process_instance_segmentation(out, threshold=threshold, target_sizes=sizes,
                                                       return_binary_maps=True)
    ours = instance(out.class_queries_logits, out.masks_queries_logits, sizes, threshold=threshold)
    total = 0
    for r, o in zip(ref, ours):
        maps = r["segmentation"]
        ref_segs = [] if not r["segments_info"] else [
            (s["label_id"], maps[k].bool()) for k, s in enumerate(r["segments_info"])]
        _assert_same_segments(ref_segs, list(zip(o.label_ids, o.masks)))
        assert sorted(s["score"] for s in r["segments_info"]) == pytest.approx(sorted(o.scores), abs=2e-6)
        total += len(o)
    assert total > 0, "the test must compare some segments"


@pytest.mark.parametrize("fuse", [(), (1, 2)])
def test_panoptic_matches(setup, fuse: tuple[int, ...]) -> None:
    processor, out, sizes = _outputs(setup)
    kwargs = dict(threshold=0.0, mask_threshold=0.05)
    ref = processor.post_process_panoptic_segmentation(out, overlap_mask_area_threshold=0.2,
                                                       label_ids_to_fuse=set(fuse), target_sizes=sizes, **kwargs)
    ours = panoptic(out.class_queries_logits, out.masks_queries_logits, sizes, overlap_threshold=0.2,
                    label_ids_to_fuse=fuse, **kwargs)
    total = 0
    for r, o in zip(ref, ours):
        seg = r["segmentation"]
        ref_segs = {s["id"]: (s["label_id"], seg == s["id"]) for s in r["segments_info"]}
        _assert_same_segments(list(ref_segs.values()), list(zip(o.label_ids, o.masks)))
        assert set(ref_segs) == set(o.ids)
        total += len(o)
    assert total > 0, "the test must compare some segments"


@pytest.mark.parametrize("margin", [1.01, 0.9])
def test_panoptic_matches_when_mask_threshold_is_near_the_best_score(setup, margin: float) -> None:
    """Above every score no segment can pass ``mask_threshold`` and streamseg skips the work: the
    reference must find none either; just below it, both must agree on what passes."""
    processor, out, sizes = _outputs(setup)
    best = out.class_queries_logits.softmax(-1)[..., :-1].max().item()
    kwargs = dict(threshold=0.0, mask_threshold=best * margin)
    ref = processor.post_process_panoptic_segmentation(out, overlap_mask_area_threshold=0.2, target_sizes=sizes,
                                                       **kwargs)
    ours = panoptic(out.class_queries_logits, out.masks_queries_logits, sizes, overlap_threshold=0.2, **kwargs)
    for r, o in zip(ref, ours):
        seg = r["segmentation"]
        _assert_same_segments([(s["label_id"], seg == s["id"]) for s in r["segments_info"]],
                              list(zip(o.label_ids, o.masks)))
        if margin > 1:
            assert len(o) == 0


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
def test_panoptic_frames_without_a_segment_beside_frames_with() -> None:
    """Frames that cannot have a segment are skipped, with no work, while the others of the batch are
    post-processed: each frame as the reference finds it."""
    processor, model, spec, frames = _setup(SAMPLE_MODEL, SAMPLE_CLIP, count=4)
    with torch.no_grad():
        out = model(pixel_values=preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32))
    out.class_queries_logits[1, :, -1] = 100.0  # every query of frame 1 says "no object"
    out.class_queries_logits[2] /= 100  # frame 2's scores all far under mask_threshold
    sizes = [f.shape[:2] for f in frames]
    ref = processor.post_process_panoptic_segmentation(out, target_sizes=sizes, label_ids_to_fuse=set())
    ours = panoptic(out.class_queries_logits, out.masks_queries_logits, sizes)
    assert [len(o) for o in ours][1:3] == [0, 0] and len(ours[0]) > 0 and len(ours[3]) > 0
    for r, o in zip(ref, ours):
        seg = r["segmentation"]
        _assert_same_segments([(i["label_id"], seg == i["id"]) for i in r["segments_info"]],
                              list(zip(o.label_ids, o.masks)))


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
def test_panoptic_frames_taken_at_once_with_different_numbers_of_queries(monkeypatch) -> None:
    """On a GPU the frames of one size are post-processed together, each padded to the most kept queries
    among them: the padding must win no pixel and count for nothing. Frames keep 5, 3, 1 and 5 queries."""
    from streamseg import ops

    processor, model, spec, frames = _setup(SAMPLE_MODEL, SAMPLE_CLIP, count=4)
    with torch.no_grad():
        out = model(pixel_values=preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32))
    for frame, dropped in ((1, 2), (2, 4)):  # the best-scoring queries of these frames say "no object"
        best = out.class_queries_logits[frame, :, :-1].max(-1).values.topk(dropped).indices
        out.class_queries_logits[frame, best, -1] = 100.0
    sizes = [f.shape[:2] for f in frames]
    one_by_one = panoptic(out.class_queries_logits, out.masks_queries_logits, sizes)
    monkeypatch.setattr(ops, "frames_at_once", lambda device: True)
    at_once = panoptic(out.class_queries_logits, out.masks_queries_logits, sizes)
    assert len({len(s) for s in one_by_one}) > 1 and all(len(s) for s in one_by_one)
    for a, b in zip(one_by_one, at_once):
        assert (a.ids, a.label_ids, a.scores, a.areas, a.boxes) == (b.ids, b.label_ids, b.scores, b.areas, b.boxes)
        assert torch.equal(a.segment_map, b.segment_map)
    ref = processor.post_process_panoptic_segmentation(out, target_sizes=sizes, label_ids_to_fuse=set())
    for r, o in zip(ref, at_once):
        seg = r["segmentation"]
        _assert_same_segments([(i["label_id"], seg == i["id"]) for i in r["segments_info"]],
                              list(zip(o.label_ids, o.masks)))


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic", "instance, a few pairs at once"])
def test_a_batch_done_at_once_equals_frame_by_frame(monkeypatch, task: str) -> None:
    """A GPU does a batch's per-frame work for all frames of one size at once (ops.batch_chunks), the
    CPU frame by frame: the same segments, scores, areas, boxes and masks, in frames of mixed sizes."""
    from streamseg import ops

    processor, model, spec, frames = _setup(SAMPLE_MODEL, SAMPLE_CLIP, count=5)
    with torch.no_grad():
        out = model(pixel_values=preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32))
    sizes = [(360, 640), (91, 161), (360, 640), (91, 161), (360, 640)]
    run = {"semantic": semantic, "instance": instance, "panoptic": panoptic}[task.split(",")[0]]
    one_by_one = run(out.class_queries_logits, out.masks_queries_logits, sizes)
    monkeypatch.setattr(ops, "frames_at_once", lambda device: True)
    if "few" in task:
        from streamseg.inference import postprocess as module

        monkeypatch.setattr(module, "MOST_PAIRS", 10)  # 5 candidates a frame: two frames, then one
    at_once = run(out.class_queries_logits, out.masks_queries_logits, sizes)
    assert sum(len(s) for s in at_once) > 5
    for a, b in zip(one_by_one, at_once):
        assert (a.ids, a.label_ids, a.scores, a.areas, a.boxes) == (b.ids, b.label_ids, b.scores, b.areas, b.boxes)
        assert torch.equal(a.masks, b.masks)


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
@pytest.mark.parametrize("task", ["semantic", "panoptic"])
@pytest.mark.parametrize("per_chunk", [1, 2, 3])
def test_full_size_resizes_a_few_channels_at_a_time_with_the_same_result(monkeypatch, task: str,
                                                                         per_chunk: int) -> None:
    """Class scores (semantic) and kept queries' probabilities (panoptic) are resized to the frame's size a
    chunk of channels at a time, within MOST_VALUES: the same segments, to the pixel, as all at once."""
    from streamseg.inference import postprocess as module

    _, model, spec, frames = _setup(SAMPLE_MODEL, SAMPLE_CLIP, count=2)
    with torch.no_grad():
        out = model(pixel_values=preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32))
    sizes = [(360, 640), (91, 161)]
    run = {"semantic": semantic, "panoptic": panoptic}[task]
    kwargs = {} if task == "semantic" else {"mask_threshold": 0.3}
    at_once = run(out.class_queries_logits, out.masks_queries_logits, sizes, **kwargs)
    monkeypatch.setattr(module, "MOST_VALUES", per_chunk * 360 * 640)  # the small frame takes more at once
    chunked = run(out.class_queries_logits, out.masks_queries_logits, sizes, **kwargs)
    assert sum(len(s) for s in at_once) >= 4
    for a, b in zip(at_once, chunked):
        assert (a.ids, a.label_ids, a.scores, a.areas, a.boxes) == (b.ids, b.label_ids, b.scores, b.areas, b.boxes)
        assert torch.equal(a.segment_map, b.segment_map)


@pytest.mark.parametrize("channels", [1, 2, 3, 7, 256, 257])
def test_first_maximum_is_torchs_max_ties_included(channels: int) -> None:
    """The CPU's scan for the first channel reaching each pixel's maximum gives ``max(1)``'s values and
    indices, where values tie too (few distinct values: most pixels have ties)."""
    from streamseg.inference.postprocess import _first_max

    x = torch.randint(0, 4, (2, channels, 9, 11), generator=torch.Generator().manual_seed(channels)).float()
    best, index = _first_max(x)
    expected = x.max(1)
    assert torch.equal(best, expected.values)
    assert torch.equal(index.long(), expected.indices)


@pytest.mark.parametrize("per_chunk", [100, 200, 300])
def test_resized_argmax_of_many_channels_in_chunks(monkeypatch, per_chunk: int) -> None:
    """Over 256 channels (a semantic model of many classes), chunk by chunk: indices past 255 in later chunks
    are not cut to a byte."""
    from streamseg.inference import postprocess as module

    values = torch.rand(1, 300, 6, 8, generator=torch.Generator().manual_seed(0))
    values[0, 280] += 2  # the last chunk's channel wins where its resize is largest
    expected = F.interpolate(values, size=(12, 15), mode="bilinear", align_corners=False).max(1).indices
    monkeypatch.setattr(module, "MOST_VALUES", per_chunk * 12 * 15)
    winner, _ = module._resized_argmax(values, (12, 15))
    assert torch.equal(winner.long(), expected)
    assert (expected == 280).any()


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_trained_sample_model_matches_at_default_thresholds(task: str) -> None:
    """The shipped model gives confident, realistic outputs: compare at transformers' defaults."""
    processor, model, spec, frames = _setup(SAMPLE_MODEL, SAMPLE_CLIP, count=2)
    with torch.no_grad():
        out = model(pixel_values=preprocess([torch.from_numpy(f) for f in frames], spec, torch.float32))
    sizes = [f.shape[:2] for f in frames]
    if task == "semantic":
        ref = processor.post_process_semantic_segmentation(out, target_sizes=sizes)
        for r, o in zip(ref, semantic(out.class_queries_logits, out.masks_queries_logits, sizes)):
            assert (r == o.label_map()).float().mean().item() >= 0.995
    elif task == "instance":
        ref = processor.post_process_instance_segmentation(out, target_sizes=sizes, return_binary_maps=True)
        for r, o in zip(ref, instance(out.class_queries_logits, out.masks_queries_logits, sizes)):
            maps = r["segmentation"]
            _assert_same_segments([(s["label_id"], maps[k].bool()) for k, s in enumerate(r["segments_info"])],
                                  list(zip(o.label_ids, o.masks)))
    else:
        ref = processor.post_process_panoptic_segmentation(out, target_sizes=sizes, label_ids_to_fuse=set())
        for r, o in zip(ref, panoptic(out.class_queries_logits, out.masks_queries_logits, sizes)):
            assert len(o) >= 3
            _assert_same_segments([(s["label_id"], r["segmentation"] == s["id"]) for s in r["segments_info"]],
                                  list(zip(o.label_ids, o.masks)))


def test_frames_are_decoded_rgb(odd_clip: Path) -> None:
    """A channel swap would still match the reference above; check the colour order against the scene."""
    from streamseg.testing.synthetic import Scene

    frame = next(iter(read_frames(odd_clip)))
    expected, _ = Scene(5, aspect=150 / 100).render(0, 150, 100)
    error_rgb = np.abs(frame.image.astype(int) - expected).mean()
    error_bgr = np.abs(frame.image[..., ::-1].astype(int) - expected).mean()
    assert error_rgb < 8 < error_bgr
