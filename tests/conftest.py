"""Shared fixtures: tiny Mask2Former checkpoints saved in the hub layout, and small real video files."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from streamseg.testing import synthetic
from streamseg.sinks.video import real_time_threads
from streamseg.testing.cameras import RtspServer, free_port
from streamseg.testing.synthetic import Scene

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MODEL = ROOT / "samples" / "model"
SAMPLE_CLIP = ROOT / "samples" / "shapes.mp4"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on the network in tests
# The tests that press Ctrl-C send SIGINT to a streamseg process, which keeps a SIGINT it was started ignoring
# (as under nohup). A suite started in the background of a shell script ignores SIGINT, and its processes with
# it: they get Python's default back, so those tests test the same thing wherever the suite runs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A test process that has finished but does not exit within two minutes (a thread stuck in native code
    as the interpreter shuts down) writes every thread's stack to stderr and exits, rather than holding the
    run until CI's time limit with nothing said."""
    faulthandler.dump_traceback_later(120, exit=True, file=sys.__stderr__)


@pytest.fixture(autouse=True)
def _no_real_time_threads_left() -> Iterator[None]:
    """A test that leaves its process real-time fails, and the process is put back: real-time threads
    (what SVT-AV1 makes of an encoder opened as root) are inherited by every later test's threads and
    processes, and busy ones starved the 2-core CI machine until its time limit."""
    yield
    left = real_time_threads()
    for tid in left:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    assert not left, f"{len(left)} threads left in a real-time scheduling class"


def reference_processor(**kwargs):
    """transformers' PIL/numpy Mask2Former processor: ``...Pil`` in 5.x, the classic class in 4.x."""
    import transformers

    cls = getattr(transformers, "Mask2FormerImageProcessorPil", None)
    if cls is None:
        cls = transformers.Mask2FormerImageProcessor
    return cls(**kwargs)


def build_tiny_model(folder: Path, size: dict, *, num_labels: int = 5, seed: int = 0) -> Path:
    """Save a randomly initialised tiny Mask2Former (Swin backbone) with a preprocessor config."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(seed)
    backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_layers=1,
        decoder_layers=2, num_queries=12, num_labels=num_labels, dim_feedforward=64, encoder_feedforward_dim=64,
        id2label={i: f"class{i}" for i in range(num_labels)},
    )
    model = Mask2FormerForUniversalSegmentation(config)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Mask2FormerImageProcessor", "size": size, "size_divisor": 32,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shortest/longest-edge size style."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-edge"), {"shortest_edge": 96, "longest_edge": 160})


@pytest.fixture(scope="session")
def tiny_model_fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed height/width size style, like the hub checkpoints (384x384)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-fixed"), {"height": 128, "width": 128}, seed=1)


def write_clip(
    path: Path,
    *,
    width: int = 96,
    height: int = 64,
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 30),
    frames: int = 12,
    audio: bool = False,
    seed: int = 5,
    codec: str = "libx264",
    **options,
) -> Path:
    """Encode a synthetic scene with chosen timestamps (and optionally a 440 Hz tone that runs 0.5 s longer);
    ``options`` go to :func:`streamseg.testing.synthetic.write_clip` (display rotation, pixel shape)."""
    pts = pts if pts is not None else list(range(frames))
    tone = None
    if audio:
        samples = int((float((pts[-1] + 1) * time_base) + 0.5) * 48000)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)[None]
    return synthetic.write_clip(path, Scene(seed, aspect=width / height), width=width, height=height, pts=pts,
                                time_base=time_base, frame_step=3, codec=codec, audio=tone, **options)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


def read_video(path: Path) -> tuple[list[int], Fraction, list[np.ndarray]]:
    """Decode a whole (small) file: pts, time base, RGB frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [f.pts for f in frames], stream.time_base, [f.to_ndarray(format="rgb24") for f in frames]


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamseg", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=ROOT,
    )


# -- a real RTSP server (GStreamer's, under Debian's python3) --------------------------------------

HAVE_RTSP_SERVER = Path("/usr/bin/python3").exists() and subprocess.run(
    ["/usr/bin/python3", "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
     "from gi.repository import GstRtspServer"], capture_output=True).returncode == 0
needs_rtsp = pytest.mark.skipif(not HAVE_RTSP_SERVER, reason="GStreamer RTSP server not installed (see .ci/run)")


class ThreadProbe:
    """A sink that notes, from its output's thread, that thread's niceness and torch thread count."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()

    def write(self, result: object) -> None:
        self.seen.add((os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), torch.get_num_threads()))

    def close(self) -> None:
        pass


# -- a real RTMP server (nginx's RTMP module, from Debian's packages) --------------------------------

NGINX, RTMP_MODULE = Path("/usr/sbin/nginx"), Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
needs_rtmp = pytest.mark.skipif(not (NGINX.exists() and RTMP_MODULE.exists()),
                                reason="nginx's RTMP module not installed (see .ci/run)")
_NGINX_CONF = """load_module {module};
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 64; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record all; record_path {folder}; }} }} }}
"""


class RtmpServer:
    """An nginx RTMP server on loopback that records each stream published to it, to ``folder``/NAME.flv;
    can be stopped and started again on the same port (into another folder)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def recording(self, name: str) -> Path:
        return self.folder / f"{name}.flv"

    def start(self) -> RtmpServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(module=RTMP_MODULE, folder=self.folder, port=self.port))
        self.proc = subprocess.Popen([str(NGINX), "-p", str(self.folder), "-c", str(conf),
                                      "-e", str(self.folder / "error.log")], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:  # listening
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"nginx did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
                assert time.monotonic() < deadline, "nginx is not listening after 10 s"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # nginx's fast shutdown: recordings closed
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def rtsp():
    if not HAVE_RTSP_SERVER:  # the fixture says it, so that a test cannot forget the mark and fail here
        pytest.skip("GStreamer RTSP server not installed (see .ci/run)")
    servers: list[RtspServer] = []

    def make(*mounts: str, auth: str | None = None) -> RtspServer:
        server = RtspServer(*mounts, auth=auth).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
