"""Freed host memory kept for reuse while a pipeline runs (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

import streamseg
from streamseg.runtime import allocator

from .conftest import write_clip

glibc = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# Page faults over five rounds of three 30 MB blocks allocated, touched and freed: glibc trims the freed
# heap top over its threshold (at most 64 MB by itself) and takes the pages back with a fault each.
ROUNDS = """
import resource, sys
import numpy as np
from streamseg.runtime.allocator import keep_freed_memory, release_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        blocks = [np.ones(30 << 20, np.uint8) for _ in range(3)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
keep_freed_memory()
faults()  # the blocks' first touch
kept = faults()
release_freed_memory()
print(default, kept)
"""


@glibc
def test_freed_blocks_come_back_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    default, kept = map(int, out.stdout.split())
    assert kept < 1000 < default, (default, kept)


@glibc
def test_a_pipeline_keeps_freed_memory_while_it_runs_and_releases_it(tmp_path: Path, tiny_model: Path,
                                                                      monkeypatch) -> None:
    calls = []  # pipelines running when the release came
    release = allocator.release_freed_memory

    def counted() -> None:
        calls.append(allocator._users)
        release()

    monkeypatch.setattr("streamseg.runtime.pipeline.release_freed_memory", counted)
    clip = write_clip(tmp_path / "c.mp4", frames=4)
    config = streamseg.load_config(None, sources=(str(clip),), model__name=str(tiny_model), model__device="cpu")
    with streamseg.Pipeline(config) as pipeline:
        assert allocator._users >= 1
        assert len(list(pipeline.results())) == 4
    pipeline.close()  # twice: released once
    assert calls == [1] and allocator._users == 0
