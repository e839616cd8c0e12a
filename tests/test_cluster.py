"""Many videos on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``): outputs equal
a single-process run, a killed worker and a lost node cost only a retry, a rerun processes nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from streamseg.cluster.chunks import STITCH_FRAMES
from streamseg.testing import synthetic
from streamseg.testing.synthetic import Scene

from .conftest import ROOT, needs_rtsp, read_video, run_cli, write_clip

ray = pytest.importorskip("ray", reason="Ray is the [ray] extra (in [test] too)")

pytestmark = pytest.mark.timeout(600)
SAMPLE = ["--config", str(ROOT / "configs" / "sample.yaml"), "--no-progress"]


@pytest.fixture(scope="module")
def head():
    """A real Ray head node with one CPU (room for one worker); a test adds and removes other nodes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    yield cluster
    cluster.shutdown()


def _workers_under(node) -> list[int]:
    """The pids of the streamseg workers a node's raylet started."""
    raylet = node.all_processes["raylet"][0].process.pid
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if b"SegmentWorker" in (entry / "cmdline").read_bytes() and f"PPid:\t{raylet}\n" in (entry / "status").read_text():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _manifest(folder: Path) -> list[dict]:
    path = folder / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(what, deadline: float, proc: subprocess.Popen, why: str):
    while time.monotonic() < deadline and proc.poll() is None:
        if found := what():
            return found
        time.sleep(0.2)
    pytest.fail(f"never happened: {why} (run ended: {proc.poll()})")


def test_a_killed_worker_and_a_lost_node_cost_only_a_retry(head, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    clips = [write_clip(tmp_path / "in" / f"clip{n}.mp4", width=256, height=192, frames=48, seed=n, audio=n % 2 == 0)
             for n in range(8)]
    # The reference: one process, torch on one thread as each worker's is (the same sums in the same order).
    ref = run_cli("segment", str(tmp_path / "in"), "-o", f"{tmp_path / 'ref'}/", "--save-masks",
                  f"{tmp_path / 'refm'}/", *SAMPLE, env={"OMP_NUM_THREADS": "1"})
    assert ref.returncode == 0, ref.stderr

    node = head.add_node(num_cpus=1)
    head.wait_for_nodes()
    out, masks = tmp_path / "out", tmp_path / "masks"
    args = [sys.executable, "-m", "streamseg", "segment", str(tmp_path / "in"), "-o", f"{out}/", "--save-masks",
            f"{masks}/", "--config", str(ROOT / "configs" / "sample.yaml"), "--cluster", head.address,
            "--stats-interval", "1"]
    with (tmp_path / "stderr").open("w") as log:
        proc = subprocess.Popen(args, stderr=log, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 400
            _wait_for(lambda: _manifest(out), deadline, proc, "a first input done")
            time.sleep(0.8)  # both workers are inside an input now (an input takes about 2 s)
            killed = _wait_for(lambda: _workers_under(head.head_node), deadline, proc, "a worker on the head node")
            os.kill(killed[0], signal.SIGKILL)
            _wait_for(lambda: [m for m in _manifest(out) if m["attempt"] == 2], deadline, proc,
                      "the killed worker's input done again elsewhere")
            time.sleep(1.0)
            assert _workers_under(node), "no worker left on the second node to lose"
            left = len(clips) - len(_manifest(out))
            assert left >= 1, "every input done before the node could be lost"
            head.remove_node(node)
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            proc.kill()
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, stderr
    assert "done: 8 of 8 inputs (0 done before, 0 failed)" in stderr
    assert "cluster: " in stderr and " fps [" in stderr  # the driver's progress, per worker

    manifest = _manifest(out)
    assert sorted(Path(m["input"]).name for m in manifest) == [c.name for c in clips]
    assert all(m["error"] is None for m in manifest)
    assert sum(m["attempt"] == 2 for m in manifest) == 2  # one for the killed worker, one for the lost node
    # Retried elsewhere: never by the killed worker (which may have died before finishing any input).
    assert len({m["worker"] for m in manifest}) >= 2
    assert not [m for m in manifest if m["attempt"] == 2 and m["worker"].endswith(f":{killed[0]}")]

    for clip in clips:
        pts, time_base, _ = read_video(clip)
        got_pts, got_base, frames = read_video(out / clip.name)
        assert len(frames) == len(pts) and [p * got_base for p in got_pts] == [p * time_base for p in pts]
        with av.open(str(out / clip.name)) as done, av.open(str(tmp_path / "ref" / clip.name)) as single:
            assert len(done.streams.audio) == len(single.streams.audio)
            if done.streams.audio:
                assert ([p.pts for p in done.demux(done.streams.audio[0])]
                        == [p.pts for p in single.demux(single.streams.audio[0])])
        assert (masks / f"{clip.stem}.jsonl").read_bytes() == (tmp_path / "refm" / f"{clip.stem}.jsonl").read_bytes()
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name]

    # A rerun processes nothing: it starts no worker, writes nothing, touches no output.
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_cli("segment", str(tmp_path / "in"), "-o", f"{out}/", "--save-masks", f"{masks}/", *SAMPLE,
                    "--cluster", head.address)
    assert again.returncode == 0 and "done: 8 of 8 inputs (8 done before, 0 failed)" in again.stderr, again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_model_that_cannot_load_ends_the_job_in_one_line(head, tmp_path: Path) -> None:
    write_clip(tmp_path / "a.mp4")
    (tmp_path / "nomodel").mkdir()
    proc = run_cli("segment", str(tmp_path / "a.mp4"), "-o", f"{tmp_path / 'out'}/", "--model",
                   str(tmp_path / "nomodel"), "--no-progress", "--cluster", head.address)
    assert proc.returncode == 4, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "config.json" in proc.stderr, proc.stderr
    assert not list((tmp_path / "out").glob("*.mp4"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--cluster", "127.0.0.1:9"], "cluster.address: nothing answers at 127.0.0.1:9"),
    (["--cluster", "local", "--workers", "0"], "cluster.workers: must be 1 to 10000"),
])
def test_bad_cluster_settings_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    write_clip(tmp_path / "a.mp4")
    proc = run_cli("segment", str(tmp_path / "a.mp4"), "-o", f"{tmp_path / 'out'}/", *SAMPLE, *extra)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("inputs", "output", "message"), [
    (["rtsp://127.0.0.1:9/cam"], "cam.mp4", "output.segment_time: cameras on a cluster record in segments"),
    (["a.mp4"], "a-out.mp4", "or cameras and streams, not one file or images"),
])
def test_what_a_cluster_cannot_run_is_refused_in_one_line(tmp_path: Path, inputs, output, message) -> None:
    write_clip(tmp_path / "a.mp4")
    proc = subprocess.run([sys.executable, "-m", "streamseg", "segment", *inputs, "-o", output, *SAMPLE,
                           "--cluster", "local"], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_without_ray_the_flag_says_how_to_install_it(tmp_path: Path) -> None:
    # Ray made unimportable for this one process, as on a machine without the extra.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = run_cli("segment", "a.mp4", "-o", f"{tmp_path / 'out'}/", "--cluster", "local",
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --cluster needs Ray, which is not installed: pip install 'streamseg[ray]'"


@needs_rtsp
def test_a_dead_workers_camera_goes_on_on_the_other_worker(head, rtsp, tmp_path: Path) -> None:
    # Two servers with the same mount: the cameras are "cam" and "cam#2" wherever each runs.
    cameras = [rtsp("cam:15").url("cam"), rtsp("cam:15").url("cam")]
    node = head.add_node(num_cpus=1)
    head.wait_for_nodes()
    (tmp_path / "out").mkdir()
    args = [sys.executable, "-m", "streamseg", "segment", *cameras, "-o", "out/rec.mp4", "--save-masks", "out/m.jsonl",
            "--segment-time", "4", "--duration", "16", "--stats-interval", "1", "--cluster", head.address,
            "--serve", "127.0.0.1:0",
            "--config", str(ROOT / "configs" / "sample.yaml")]
    err = tmp_path / "stderr"
    try:
        with err.open("w") as log:
            proc = subprocess.Popen(args, stderr=log, cwd=tmp_path)
            try:
                deadline = time.monotonic() + 200

                def holder() -> int | None:  # the worker whose stats show cam#2 live with frames
                    found = re.findall(r"^cam#2: live, [1-9]\d* frames.*\[on \S+:(\d+)\]$", err.read_text(), re.MULTILINE)
                    return int(found[-1]) if found else None

                victim = _wait_for(holder, deadline, proc, "cam#2 live on a worker")
                os.kill(victim, signal.SIGKILL)
                killed_at = time.time()
                # The driver's page: cam#2's pictures and stats from the worker it moved to.
                page = re.search(r"live preview on (http://\S+)", err.read_text()).group(1)

                def moved() -> list[dict]:
                    stats = json.loads(urllib.request.urlopen(page + "stats", timeout=5).read())
                    return [s for s in stats if s["source"] == "cam#2" and s["frames"] > 0
                            and not s["worker"].endswith(f":{victim}")]

                assert _wait_for(moved, deadline, proc, "cam#2 on the page from another worker")
                pictures = set()
                for _ in range(3):
                    pictures.add(urllib.request.urlopen(page + "frame/1.jpg", timeout=5).read())
                    time.sleep(0.5)
                assert len(pictures) > 1 and all(p.startswith(b"\xff\xd8") for p in pictures)
                proc.wait(timeout=max(deadline - time.monotonic(), 1))
            finally:
                proc.kill()
    finally:
        head.remove_node(node)
    stderr = err.read_text()
    assert proc.returncode == 0, stderr
    assert re.search(rf"worker \S+:{victim} died: rtsp://127\.0\.0\.1:\d+/cam move to \S+", stderr), stderr
    final = {line.split(":")[0]: line for line in stderr.splitlines() if re.match(r"^cam(#2)?: ended", line)}
    assert set(final) == {"cam", "cam#2"} and f":{victim}]" not in final["cam#2"], stderr
    assert "done: " in stderr
    # Its frames resumed on the other worker, recorded in new segment files beside those from before.
    times = [json.loads(line)["time"] for path in (tmp_path / "out").glob("m-cam_2-*.jsonl")
             for line in path.read_text().splitlines()]
    assert min(times) < killed_at < max(times) - 3, (min(times), killed_at, max(times))
    recordings = sorted((tmp_path / "out").glob("rec-cam_2-*.mp4"))
    assert len(recordings) >= 2
    for path in recordings[1:]:
        assert len(read_video(path)[0]) > 0


def test_a_long_file_in_chunks_equals_one_run(head, tmp_path: Path) -> None:
    # The sample's scene, 3 s with sound and a keyframe every 1.5 s: two chunks, on two workers.
    clip = synthetic.write_clip(tmp_path / "long.mp4", Scene(2_000_001, aspect=16 / 9), width=320, height=180,
                                pts=range(90), options={"g": "45", "keyint_min": "45", "sc_threshold": "0"},
                                audio=0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 48000) / 48000)[None])
    outputs = ["--save-masks", "{}/masks/", "--save-tracks", "{}/tracks/", "--save-labels", "{}/labels/"]

    def run(where: str, *extra: str) -> subprocess.CompletedProcess:
        args = [a.format(tmp_path / where) for a in outputs]
        return run_cli("segment", str(clip), "-o", f"{tmp_path / where}/", *args, *SAMPLE, *extra,
                       env={"OMP_NUM_THREADS": "1"})

    one = run("one")
    assert one.returncode == 0, one.stderr
    node = head.add_node(num_cpus=1)
    head.wait_for_nodes()
    try:
        chunked = run("chunked", "--cluster", head.address, "--chunk-seconds", "1")
    finally:
        head.remove_node(node)
    assert chunked.returncode == 0, chunked.stderr
    [line] = _manifest(tmp_path / "chunked")
    assert line["chunks"] == 2 and line["frames"] == 90 and len(line["worker"].split()) == 2, line

    def streams(path: Path) -> tuple[list, list]:
        with av.open(str(path)) as container:
            pictures = [f.pts * f.time_base for f in container.decode(container.streams.video[0])]
        with av.open(str(path)) as container:
            sound = [(p.pts * p.time_base, bytes(p)) for p in container.demux(container.streams.audio[0])
                     if p.dts is not None]
        return pictures, sound

    pictures, sound = streams(tmp_path / "chunked" / "long.mp4")
    assert (pictures, sound) == streams(tmp_path / "one" / "long.mp4")
    assert len(pictures) == 90 and len(sound) > 130
    # The masks and the tracks (their ids stitched across the join) as one run gives them, byte for byte, but
    # for a track hidden at the join: each part tracks on its own, so that one comes back with a new id, or
    # none if seen again only for a frame or two (README says so).
    labels = sorted(p.name for p in (tmp_path / "one" / "labels").iterdir())
    assert len(labels) == 180 and sorted(p.name for p in (tmp_path / "chunked" / "labels").iterdir()) == labels
    one_run, chunked_run = ([json.loads(line) for line in (tmp_path / where / "masks" / "long.jsonl").open()]
                            for where in ("one", "chunked"))
    # Hidden at the join: seen on both sides of it, but not in the frames either side that the stitching
    # compares (STITCH_FRAMES before it and after it).
    join = 45  # the second chunk's first frame
    seen = [{s["track_id"] for s in record["segments"]} - {None} for record in one_run]
    near = set().union(*seen[join - STITCH_FRAMES : join]) & set().union(*seen[join : join + STITCH_FRAMES])
    hidden = (set().union(*seen[:join]) & set().union(*seen[join:])) - near
    for ours, theirs in zip(chunked_run, one_run, strict=True):
        for mine, one in zip(ours["segments"], theirs["segments"], strict=True):
            if one["track_id"] in hidden:
                mine["track_id"] = one["track_id"] = "hidden"
        assert ours == theirs, theirs["frame"]
    hidden_segments = {f'{r["frame"]} {s["rle"]["counts"]}' for r in one_run for s in r["segments"]
                       if s["track_id"] == "hidden"}

    def tracks(where: str) -> list[str]:
        lines = (tmp_path / where / "tracks" / "long.txt").read_text().splitlines()
        return [line for line in lines if " ".join(line.split()[::5]) not in hidden_segments]

    assert tracks("chunked") == tracks("one")
    exempt = {r["frame"] for r in one_run[join:] if any(s["track_id"] == "hidden" for s in r["segments"])}
    for name in (f"labels/{label}" for label in labels if int(label.split("-")[-1].split(".")[0]) not in exempt):
        assert (tmp_path / "chunked" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name or p.name == ".chunks"]
