"""Many videos on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``): outputs equal
a single-process run, a killed worker and a lost node cost only a retry, a rerun processes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from .conftest import ROOT, read_video, run_cli, write_clip

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
            if b"FileWorker" in (entry / "cmdline").read_bytes() and f"PPid:\t{raylet}\n" in (entry / "status").read_text():
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
    clips = [write_clip(tmp_path / "in" / f"clip{n}.mp4", width=320, height=240, frames=60, seed=n, audio=n % 2 == 0)
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
            time.sleep(1.5)  # both workers are inside an input now
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
    assert len({m["worker"] for m in manifest}) >= 3  # the two first workers and at least one in their place

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


def test_a_camera_is_not_run_on_the_cluster(tmp_path: Path) -> None:
    proc = run_cli("segment", "rtsp://127.0.0.1:9/cam", "-o", str(tmp_path / "cam.mp4"), *SAMPLE, "--cluster", "local")
    assert proc.returncode == 2 and "--cluster runs many video files" in proc.stderr, proc.stderr


def test_without_ray_the_flag_says_how_to_install_it(tmp_path: Path) -> None:
    # Ray made unimportable for this one process, as on a machine without the extra.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = run_cli("segment", "a.mp4", "-o", f"{tmp_path / 'out'}/", "--cluster", "local",
                   env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --cluster needs Ray, which is not installed: pip install 'streamseg[ray]'"
