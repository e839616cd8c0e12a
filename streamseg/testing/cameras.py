"""Real cameras for tests and benchmarks: GStreamer's RTSP server, run under Debian's python3 (python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}), serving test patterns on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RtspServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """A GStreamer RTSP server process on loopback; can be stopped and started again on the same port."""

    def __init__(self, *mounts: str, auth: str | None = None) -> None:
        self.port = free_port()
        self.mounts = mounts
        self.auth = auth
        self.proc: subprocess.Popen | None = None

    def url(self, mount: str, credentials: str = "") -> str:
        return f"rtsp://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}/{mount}"

    def start(self) -> RtspServer:
        cmd = ["/usr/bin/python3", str(Path(__file__).with_name("rtsp_server.py")), str(self.port), *self.mounts]
        cmd += ["--auth", self.auth] if self.auth else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read() if self.proc.stderr else line
        return self

    def wait_written(self, timeout: float = 5.0) -> None:
        """Wait until each recording has stopped growing: the server's muxer has written what the ended
        session left it (at most ``timeout`` s)."""
        recordings = [Path(m.split("=", 1)[1]) for m in self.mounts if ":record" in m]
        sizes, deadline = None, time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            sizes, last = [p.stat().st_size if p.exists() else -1 for p in recordings], sizes
            if sizes == last:
                return

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
