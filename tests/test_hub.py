"""Loading a checkpoint by hub id through the real hub client, from a local server that answers as the hub
does (tests/hub_server.py): downloaded once, then loaded from the cache; a missing repository is one
line; on a terminal the download shows its progress."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from .conftest import ROOT, run_cli, write_clip
from .hub_server import HubServer

REPO = "test-org/tiny-mask2former"


@pytest.fixture
def hub(tiny_model: Path):
    with HubServer({REPO: tiny_model}) as server:
        yield server


def _env(hub: HubServer, home: Path, **more: str) -> dict[str, str]:
    """The hub client's settings for a run: online (the tests are offline otherwise), against ``hub``."""
    return {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(home), **more}


def _downloads(hub: HubServer) -> list[str]:
    return [r for r in hub.requests if r.startswith("GET ") and r.endswith("/model.safetensors")]


def test_a_hub_id_downloads_once_then_loads_from_the_cache(hub: HubServer, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4", frames=4)
    home = tmp_path / "hf-home"
    args = ("segment", str(clip), "--model", REPO, "--save-masks", str(tmp_path / "m.jsonl"), "--no-progress")
    first = run_cli(*args, timeout=240, env=_env(hub, home))
    assert first.returncode == 0, first.stderr
    assert len(_downloads(hub)) == 1
    again = run_cli(*args, timeout=240, env=_env(hub, home))
    assert again.returncode == 0, again.stderr
    assert len(_downloads(hub)) == 1  # the weights came from the cache
    offline = run_cli(*args, timeout=240, env=_env(hub, home, HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 4


def test_a_missing_repository_is_one_line(hub: HubServer, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    proc = run_cli("segment", str(clip), "--model", "test-org/no-such-model", "--save-masks",
                   str(tmp_path / "m.jsonl"), timeout=240, env=_env(hub, tmp_path / "hf-home"))
    assert proc.returncode == 4, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model 'test-org/no-such-model' not found on the Hugging "
                                                   "Face hub"), proc.stderr


def _on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal for its output, as a user's shell would; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "streamseg", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait(timeout=10)
        os.close(master)
    return proc.returncode, shown.decode(errors="replace")


@pytest.mark.parametrize("flags", [[], ["--no-progress"]], ids=["progress", "no-progress"])
def test_a_download_shows_its_progress_on_a_terminal(hub: HubServer, tmp_path: Path, flags: list[str]) -> None:
    clip = write_clip(tmp_path / "in.mp4", frames=2)
    code, shown = _on_a_terminal(["segment", str(clip), "--model", REPO, "--save-masks", str(tmp_path / "m.jsonl"),
                                  *flags], _env(hub, tmp_path / "hf-home"))
    assert code == 0, shown
    assert ("model.safetensors: 100%" in shown) == (not flags), shown
    assert "Loading weights" not in shown  # transformers' own bars stay hidden
