"""Images in (a file, a folder, a glob, a list; numpy, PIL and torch in memory) and images out."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import streamseg
from streamseg.sources.images import natural_key

from .conftest import ROOT, SAMPLE_CLIP, run_cli

CONFIG = str(ROOT / "configs" / "sample.yaml")


def _video_frames(count: int) -> list[np.ndarray]:
    with av.open(str(SAMPLE_CLIP)) as container:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _segments(record: dict) -> list[tuple]:
    return [(s["label"], s["area"], tuple(s["bbox"]), tuple(s["rle"])) for s in record["segments"]]


@pytest.fixture(scope="module")
def video_path_results() -> list:
    """The video path's results for the sample's first frames, one frame a batch, drawn as RGB."""
    results = []
    cfg = streamseg.load_config(CONFIG, sources=(str(SAMPLE_CLIP),), batching__batch_size=1)
    with streamseg.Pipeline(cfg, annotate=True, masks_to_host=True) as pipeline:
        for result in pipeline.results():
            results.append(result)
            if len(results) == 3:
                pipeline.stop()
    return results[:3]


def test_an_image_in_gives_an_image_out_equal_to_the_video_path(tmp_path: Path, video_path_results: list) -> None:
    frame = _video_frames(1)[0]
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out, masks = tmp_path / "photo-seg.png", tmp_path / "photo.jsonl"
    proc = run_cli("segment", str(photo), "-o", str(out), "--save-masks", str(masks), "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    drawn = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    expected = video_path_results[0]
    assert np.array_equal(drawn, expected.annotated)  # PNG is lossless: the very pixels of the video path
    (record,) = _records(masks)
    assert record["source"] == str(photo) and record["frame"] == 0
    assert record["segments"] and [s["label"] for s in record["segments"]] == expected.segmentation.labels
    assert f"-> {out}" in proc.stderr


def _photo_set(folder: Path) -> dict[str, np.ndarray]:
    """Three frames of the sample at two sizes, and one as a phone's JPEG stored sideways with an EXIF
    orientation (6: turn 90 degrees clockwise to show)."""
    folder.mkdir()
    frames = _video_frames(3)
    shown = {"img2.png": frames[0], "img10.png": cv2.resize(frames[1], (200, 120)), "img1.png": frames[2]}
    for name, rgb in shown.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    upright = frames[0][:, :200]
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what the camera wrote: turned back 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "phone.jpg", exif=exif, quality=98)
    shown["phone.jpg"] = upright
    return shown


def test_a_folder_runs_as_one_job_in_natural_order_with_mixed_sizes_and_exif(tmp_path: Path) -> None:
    shown = _photo_set(tmp_path / "shots")
    out, masks = tmp_path / "out", tmp_path / "shots.jsonl"
    proc = run_cli("segment", str(tmp_path / "shots"), "-o", f"{out}/", "--save-masks", str(masks),
                   "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    order = ["img1.png", "img2.png", "img10.png", "phone.jpg"]
    records = _records(masks)
    assert [Path(r["source"]).name for r in records] == order
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert sorted(p.name for p in out.iterdir()) == sorted(order)
    for name in order:
        written = cv2.imread(str(out / name))
        assert written.shape[:2] == shown[name].shape[:2], name  # the phone's photo upright
    assert {(r["width"], r["height"]) for r in records} == {(640, 360), (200, 120), (200, 360)}
    assert sorted(order, key=natural_key) == order


def test_a_quoted_glob_and_a_list_file_name_the_same_images(tmp_path: Path) -> None:
    _photo_set(tmp_path / "shots")
    listed = tmp_path / "shots.txt"
    listed.write_text("shots/img10.png\n# a comment\nshots/img1.png\n")
    for spec, expected in ((str(tmp_path / "shots" / "img*.png"), ["img1.png", "img2.png", "img10.png"]),
                           (str(listed), ["img10.png", "img1.png"])):
        masks = tmp_path / "masks.jsonl"
        proc = run_cli("segment", spec, "--save-masks", str(masks), "--config", CONFIG)
        assert proc.returncode == 0, proc.stderr
        assert [Path(r["source"]).name for r in _records(masks)] == expected


def test_a_folder_of_images_can_make_a_video_of_one_image_a_second(tmp_path: Path) -> None:
    _photo_set(tmp_path / "shots")
    out = tmp_path / "shots.mp4"
    proc = run_cli("segment", str(tmp_path / "shots" / "img*.png"), "-o", str(out), "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert times == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(("args", "message"), [
    ([str(SAMPLE_CLIP), "-o", "x.png"], "output.video: x.png takes images"),
    (["nothing-here/*.jpg", "--save-masks", "m.jsonl"], "nothing-here/*.jpg: a pattern that matches no image"),
])
def test_wrong_image_uses_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("segment", *args, "--config", CONFIG)
    assert proc.returncode in (2, 3) and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_numpy_pil_and_torch_frames_segment_as_their_file_does(tmp_path: Path) -> None:
    frame = _video_frames(1)[0]
    photo = tmp_path / "frame.png"
    cv2.imwrite(str(photo), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (from_file,) = streamseg.segment(photo, config=CONFIG)
    inputs = [frame, Image.fromarray(frame), torch.from_numpy(frame), torch.from_numpy(frame).permute(2, 0, 1)]
    results = list(streamseg.segment(inputs, config=CONFIG))
    assert [r.index for r in results] == [0, 1, 2, 3] and [r.time for r in results] == [0.0, 1.0, 2.0, 3.0]
    for result in results:
        assert result.segmentation.labels == from_file.segmentation.labels
        assert torch.equal(result.segmentation.label_map(), from_file.segmentation.label_map())
    (single,) = streamseg.segment(frame, config=CONFIG)
    assert single.source == "array"


def test_an_iterable_of_frames_with_their_times(tmp_path: Path) -> None:
    frames = _video_frames(3)

    def capture():
        for k, frame in enumerate(frames):
            yield frame, 0.5 * k

    results = list(streamseg.segment(capture(), config=CONFIG))
    assert [r.time for r in results] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize(("value", "named"), [
    (np.zeros((4, 4), np.float32), "a numpy array of shape (4, 4) and dtype float32"),
    ([np.zeros((8, 8, 3), np.uint8), {"a": 1}], "item 1: a builtins.dict"),
    (3.5, "a builtins.float"),
])
def test_a_wrong_type_is_named_never_its_data(value, named: str) -> None:
    with pytest.raises(streamseg.SourceError) as caught:
        list(streamseg.segment(value, config=CONFIG))
    message = str(caught.value)
    assert named in message and "\n" not in message and len(message) < 200


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance"])
def test_label_maps_decode_back_to_the_jsonl_masks(tmp_path: Path, task: str) -> None:
    from streamseg import rle

    labels, masks = tmp_path / "labels", tmp_path / "m.jsonl"
    proc = run_cli("segment", str(SAMPLE_CLIP), "--task", task, "--save-masks", str(masks), "--save-labels",
                   str(labels), "--duration", "0.3", "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    records = _records(masks)
    assert records and sorted(p.name for p in labels.glob("*.png")) == [f"shapes-{r['frame']:06d}.png" for r in records]
    found = 0
    for record in records:
        stem = labels / f"shapes-{record['frame']:06d}"
        image = cv2.imread(f"{stem}.png", cv2.IMREAD_UNCHANGED)
        info = json.loads(Path(f"{stem}.json").read_text())
        if task == "panoptic":  # COCO's encoding: id = R + 256 G + 256^2 B
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.int64)
            image = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        else:
            assert image.dtype == np.uint16
        assert info["frame"] == record["frame"] and info["source"] == record["source"]
        assert [(s["id"], s["category_id"], s["area"]) for s in info["segments_info"]] == [
            (s["id"], s["label_id"], s["area"]) for s in record["segments"]]
        decoded = [rle.decode(s["rle"]).astype(bool) for s in record["segments"]]
        for k, entry in enumerate(info["segments_info"]):
            later = np.zeros(image.shape, bool)
            for mask in decoded[k + 1:]:
                later |= mask
            # Where instances overlap the later one's value stands; semantic and panoptic never overlap.
            assert np.array_equal(image == entry["value"], decoded[k] & ~later), (record["frame"], k)
            found += 1
        anything = np.zeros(image.shape, bool)
        for mask in decoded:
            anything |= mask
        assert np.array_equal(image == (65535 if task == "semantic" else 0), ~anything)
    assert found > 0


@pytest.mark.parametrize(("flags", "expected"), [
    (["--vid-stride", "3"], list(range(0, 30, 3))),
    (["--max-fps", "10"], list(range(0, 30, 3))),  # the sample is 30 fps: one frame in three
    (["--vid-stride", "2", "--max-fps", "5"], list(range(0, 30, 6))),
])
def test_stride_and_rate_keep_frame_numbers_and_times(tmp_path: Path, flags: list[str], expected: list[int]) -> None:
    masks, out = tmp_path / "m.jsonl", tmp_path / "o.mp4"
    proc = run_cli("segment", str(SAMPLE_CLIP), *flags, "--save-masks", str(masks), "-o", str(out),
                   "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    records = _records(masks)[:len(expected)]
    assert [r["frame"] for r in records] == expected
    assert [round(r["time"] * 30) for r in records] == expected  # the source's own times
    with av.open(str(SAMPLE_CLIP)) as container:
        total = container.streams.video[0].frames
    assert len(_records(masks)) == len(range(0, total, expected[1]))
    with av.open(str(out)) as container:
        times = [round(float(f.time) * 30) for f in container.decode(video=0)]
    assert times[:len(expected)] == expected


def _truth_as_coco() -> dict:
    """The sample clip's ground truth (things only) as a COCO dataset, images numbered by frame."""
    from streamseg.testing.synthetic import LABELS, THING_IDS

    truth = [json.loads(line) for line in (ROOT / "samples" / "shapes.truth.jsonl").read_text().splitlines()]
    annotations = [
        {"id": len(truth) * 100 + k, "image_id": r["frame"], "category_id": s["label_id"], "segmentation": s["rle"],
         "area": s.get("area") or int(_decode(s["rle"]).sum()), "bbox": s.get("bbox") or _box(_decode(s["rle"])),
         "iscrowd": 0}
        for r in truth for k, s in enumerate(r["segments"]) if s["label_id"] in THING_IDS]
    for n, annotation in enumerate(annotations):
        annotation["id"] = n + 1
    return {"images": [{"id": r["frame"], "width": r["width"], "height": r["height"]} for r in truth],
            "annotations": annotations, "categories": [{"id": k, "name": LABELS[k]} for k in THING_IDS]}


def _decode(rle_: dict) -> np.ndarray:
    from streamseg import rle

    return rle.decode(rle_)


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def test_coco_results_load_and_evaluate_with_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = tmp_path / "results.json"
    proc = run_cli("segment", str(SAMPLE_CLIP), "--task", "instance", "--vid-stride", "4", "--save-coco", str(results),
                   "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(results.read_text())
    assert found and {"image_id", "category_id", "segmentation", "score", "bbox"} <= set(found[0])
    ground = COCO()
    ground.dataset = _truth_as_coco()
    ground.createIndex()
    detected = ground.loadRes(str(results))
    evaluation = COCOeval(ground, detected, "segm")
    evaluation.params.imgIds = list(range(0, len(ground.imgs), 4))  # the frames segmented (every fourth)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] > 0.8, evaluation.stats  # the trained model's mask AP on frames it never saw (0.89)


def test_panoptic_coco_format_has_a_png_per_frame_with_its_segments(tmp_path: Path) -> None:
    target = tmp_path / "panoptic.json"
    proc = run_cli("segment", str(SAMPLE_CLIP), "--save-coco", str(target), "--duration", "0.3", "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(target.read_text())
    assert {"images", "annotations", "categories"} <= set(data) and data["annotations"]
    assert [a["image_id"] for a in data["annotations"]] == [i["id"] for i in data["images"]]
    for annotation in data["annotations"]:
        rgb = cv2.cvtColor(cv2.imread(str(tmp_path / "panoptic" / annotation["file_name"])), cv2.COLOR_BGR2RGB)
        ids = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64) + 65536 * rgb[..., 2].astype(np.int64)
        areas = {s["id"]: s["area"] for s in annotation["segments_info"]}
        assert set(np.unique(ids)) - {0} == set(areas)
        assert all(int((ids == k).sum()) == area for k, area in areas.items())


def test_classes_keep_only_those_segments_with_their_ids_and_masks(tmp_path: Path) -> None:
    every, some = tmp_path / "all.jsonl", tmp_path / "some.jsonl"
    for target, extra in ((every, []), (some, ["--classes", "ball", "3"])):  # a name and an id (3: sky)
        proc = run_cli("segment", str(SAMPLE_CLIP), "--save-masks", str(target), "--duration", "0.5", "--batch-size",
                       "1", "--config", CONFIG, *extra)
        assert proc.returncode == 0, proc.stderr
    kept = 0
    for whole, part in zip(_records(every), _records(some)):
        expected = [s for s in whole["segments"] if s["label"] in ("ball", "sky")]
        assert [(s["id"], s["label"], s["area"], s["rle"]) for s in part["segments"]] == [
            (s["id"], s["label"], s["area"], s["rle"]) for s in expected]
        kept += len(expected)
    assert kept > 0 and any(len(r["segments"]) > 2 for r in _records(every))


def test_an_unknown_class_is_a_one_line_error_naming_the_model_s_classes(tmp_path: Path) -> None:
    proc = run_cli("segment", str(SAMPLE_CLIP), "--save-masks", str(tmp_path / "m.jsonl"), "--classes", "cat",
                   "--config", CONFIG)
    assert proc.returncode == 2, proc.stderr
    assert "postprocess.classes: this model has no class 'cat' (it has 0: ball" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_time_range_seeks_and_keeps_frame_numbers_times_and_its_own_sound(tmp_path: Path) -> None:
    from streamseg.sources import read_frames

    # The sample's keyframes are at 0 and 6.13 s: a seek to 7 s starts decoding at 6.13, not at 0.
    first = next(iter(read_frames(SAMPLE_CLIP, seek=7.0)))
    assert abs(first.time - 6.1333) < 0.01
    masks, out = tmp_path / "m.jsonl", tmp_path / "clip.mp4"
    proc = run_cli("segment", str(SAMPLE_CLIP), "--start", "7", "--end", "8.5", "--save-masks", str(masks), "-o",
                   str(out), "--config", CONFIG)
    assert proc.returncode == 0, proc.stderr
    records = _records(masks)
    assert [r["frame"] for r in records] == list(range(210, 255))
    assert abs(records[0]["time"] - 7.0) < 1e-6 and abs(records[-1]["time"] - 254 / 30) < 1e-6
    with av.open(str(out)) as container:
        times = [float(f.time) for f in container.decode(video=0)]
        container.seek(0)
        sound = sum(float(f.samples) / f.sample_rate for f in container.decode(audio=0))
    assert len(times) == 45 and times[0] == 0.0  # a clip of its own, from 0
    assert abs(sound - 1.5) < 0.1, sound  # the range's sound, not the file's from its start


def test_a_time_range_is_for_files(tmp_path: Path) -> None:
    proc = run_cli("segment", "rtsp://127.0.0.1:9/cam", "--start", "2", "--save-masks", str(tmp_path / "m.jsonl"),
                   "--config", CONFIG)
    assert proc.returncode == 2 and "start, end: a time range is for video files" in proc.stderr, proc.stderr


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_segments_become_supervision_detections(task: str) -> None:
    import supervision as sv

    frame = _video_frames(1)[0]
    (result,) = streamseg.segment(frame, config=CONFIG, task=task)
    seg = result.segmentation
    detections = seg.to_detections()
    assert isinstance(detections, sv.Detections) and len(detections) == len(seg) > 0
    assert np.array_equal(detections.mask, seg.masks.numpy())
    assert list(detections.class_id) == seg.label_ids and list(detections.data["class_name"]) == seg.labels
    assert (detections.confidence is None) == (task == "semantic")
    assert np.allclose(detections.area, [m.sum() for m in seg.masks.numpy()])  # supervision's area: the masks'
    x0, y0, x1, y1 = detections.xyxy[0]
    x, y, w, h = seg.boxes[0]
    assert (x0, y0, x1 - x0, y1 - y0) == (x, y, w, h)
    drawn = sv.MaskAnnotator().annotate(scene=frame.copy(), detections=detections)  # its annotators take them
    assert drawn.shape == frame.shape and not np.array_equal(drawn, frame)
