"""Many videos in one command: an output each in a folder, failures skipped, finished inputs skipped on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import read_video, run_cli, write_clip


def _videos(folder: Path) -> list[Path]:
    folder.mkdir()
    clips = [write_clip(folder / f"clip{n}.mp4", frames=6 + n, seed=n) for n in (1, 2, 10)]
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 100)
    return clips


def test_a_folder_of_videos_gives_an_output_each_skipping_a_broken_one(tmp_path: Path, tiny_model: Path) -> None:
    clips = _videos(tmp_path / "in")
    out, masks = tmp_path / "out", tmp_path / "masks"
    args = ["segment", str(tmp_path / "in"), "-o", f"{out}/", "--save-masks", f"{masks}/", "--model", str(tiny_model),
            "--no-progress"]
    proc = run_cli(*args)
    assert proc.returncode == 6, proc.stderr  # some inputs failed
    assert "broken.mp4: failed, skipped" in proc.stderr and "done: 3 of 4 inputs (0 done before, 1 failed)" in proc.stderr
    assert sorted(p.name for p in out.glob("*.mp4")) == ["clip1.mp4", "clip10.mp4", "clip2.mp4"]
    assert not list(out.glob("*.part.*")) and not list(masks.glob("*.part.*"))
    for clip in clips:
        assert len(read_video(out / clip.name)[0]) == len(read_video(clip)[0])
        assert len((masks / f"{clip.stem}.jsonl").read_text().splitlines()) == len(read_video(clip)[0])
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [Path(m["input"]).name for m in manifest] == ["broken.mp4", "clip1.mp4", "clip2.mp4", "clip10.mp4"]
    assert manifest[0]["error"] and all(m["error"] is None and m["frames"] > 0 for m in manifest[1:])

    # A rerun skips what is finished (its files untouched) and tries the failed one again.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    again = run_cli(*args)
    assert again.returncode == 6 and "done: 3 of 4 inputs (3 done before, 1 failed)" in again.stderr, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == before


def test_an_unfinished_output_is_never_taken_for_a_finished_one(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "in").mkdir()
    clip = write_clip(tmp_path / "in" / "a.mp4", frames=8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.part.mp4").write_bytes(b"what a crash left")  # a run killed while writing it
    proc = run_cli("segment", str(clip), "-o", f"{out}/", "--model", str(tiny_model), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "manifest.jsonl"]
    assert len(read_video(out / "a.mp4")[0]) == 8


def test_many_videos_need_a_folder_for_their_masks(tmp_path: Path, tiny_model: Path) -> None:
    _videos(tmp_path / "in")
    proc = run_cli("segment", str(tmp_path / "in" / "clip*.mp4"), "-o", f"{tmp_path / 'out'}/", "--save-masks",
                   str(tmp_path / "all.jsonl"), "--model", str(tiny_model))
    assert proc.returncode == 2 and "output.masks: with many videos, give a folder" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_many_videos_label_maps_appear_when_their_video_is_done(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "in").mkdir()
    clips = [write_clip(tmp_path / "in" / f"v{n}.mp4", frames=4 + n, seed=n) for n in (1, 2)]
    labels = tmp_path / "labels"
    (labels / ".v1.part").mkdir(parents=True)
    (labels / ".v1.part" / "v1-000099.png").write_bytes(b"what a crash left")
    proc = run_cli("segment", str(tmp_path / "in"), "-o", f"{tmp_path / 'out'}/", "--save-labels", f"{labels}/",
                   "--model", str(tiny_model), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    expected = sorted(f"{clip.stem}-{k:06d}.{ext}" for clip in clips for k in range(len(read_video(clip)[0]))
                      for ext in ("png", "json"))
    assert sorted(p.name for p in labels.iterdir()) == expected  # no temporary folder, nothing of the crash's


def test_many_videos_refuse_one_coco_file(tmp_path: Path, tiny_model: Path) -> None:
    _videos(tmp_path / "in")
    proc = run_cli("segment", str(tmp_path / "in"), "-o", f"{tmp_path / 'out'}/", "--save-coco",
                   str(tmp_path / "coco.json"), "--model", str(tiny_model))
    assert proc.returncode == 2 and "output.coco: not written for many videos" in proc.stderr, proc.stderr


def test_many_videos_to_an_fsspec_url(tmp_path: Path, tiny_model: Path) -> None:
    """Outputs to a URL go through fsspec (its local filesystem here, as s3fs would take s3://): made locally,
    uploaded under a temporary name, moved to their own once whole; the manifest is kept there too."""
    clips = _videos(tmp_path / "in")[:2]
    (tmp_path / "in" / "broken.mp4").unlink()
    (tmp_path / "in" / "clip10.mp4").unlink()
    out, masks = f"file://{tmp_path}/bucket/out/", f"file://{tmp_path}/bucket/masks/"
    args = ["segment", str(tmp_path / "in"), "-o", out, "--save-masks", masks, "--model", str(tiny_model),
            "--no-progress"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    bucket = tmp_path / "bucket"
    assert sorted(p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file()) == [
        "masks/clip1.jsonl", "masks/clip2.jsonl", "out/clip1.mp4", "out/clip2.mp4", "out/manifest.jsonl"]
    for clip in clips:
        assert len(read_video(bucket / "out" / clip.name)[0]) == len(read_video(clip)[0])
    manifest = [json.loads(line) for line in (bucket / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [m["outputs"][0] for m in manifest] == [f"{out}clip1.mp4", f"{out}clip2.mp4"]
    again = run_cli(*args)
    assert again.returncode == 0 and "(2 done before, 0 failed)" in again.stderr, again.stderr
