"""The worked examples of docs/architecture.md run as written, through the documented contracts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import streamseg
from streamseg.sinks import Sink
from streamseg.sources import Source, classify, Kind

from .conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"


def _examples() -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S))


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The document's code, run once from the project's root (its config path is relative)."""
    namespace: dict = {"__name__": "architecture_example"}
    import os

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(_examples(), str(DOC), "exec"), namespace)  # noqa: S102 - our own document
    finally:
        os.chdir(here)
    return namespace


def test_the_documented_source_and_sink_run_through_a_pipeline(example: dict) -> None:
    summary, counter = example["summary"], example["counter"]
    assert summary.frames == 12
    assert counter.frames == 12
    assert all(isinstance(n, int) and n > 0 for n in counter.counts.values())


def test_a_custom_source_feeds_the_built_in_outputs(example: dict, tmp_path: Path) -> None:
    masks = tmp_path / "ramp.jsonl"
    config = streamseg.load_config(ROOT / "configs" / "sample.yaml", output__masks=str(masks))
    with streamseg.Pipeline(config, sources=[example["Gradient"]("ramp", count=7)]) as pipeline:
        summary = pipeline.run(handle_interrupt=False)
    records = [json.loads(line) for line in masks.read_text().splitlines()]
    assert summary.frames == 7 and [r["frame"] for r in records] == list(range(7))
    assert {r["source"] for r in records} == {"ramp"}


class _Drawn(Sink):
    stage = "drawn"
    wants_annotated = True

    def __init__(self) -> None:
        self.shapes: list[tuple] = []
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def write(self, result) -> None:
        assert result.annotated is not None  # drawn because this sink declared it wants it
        self.shapes.append(result.annotated.shape)

    def close(self) -> None:
        self.closed = True


def test_a_sink_that_declares_it_wants_drawn_frames_gets_them(tmp_path: Path) -> None:
    sink = _Drawn()
    config = streamseg.load_config(ROOT / "configs" / "sample.yaml", sources=(str(ROOT / "samples" / "shapes.mp4"),),
                                   duration=1.0)
    with streamseg.Pipeline(config, sinks=[sink]) as pipeline:
        summary = pipeline.run(handle_interrupt=False)
    assert sink.opened and sink.closed
    assert summary.frames == len(sink.shapes) > 0
    assert all(shape[2] == 3 for shape in sink.shapes)


def test_a_source_that_fails_to_open_fails_the_start_and_is_closed(tmp_path: Path) -> None:
    closed = []

    class Broken(Source):
        name = "broken"

        def open(self, context) -> None:
            raise streamseg.SourceError("broken: cannot open")

        def frames(self):
            yield from ()

        def close(self) -> None:
            closed.append(True)

    config = streamseg.load_config(ROOT / "configs" / "sample.yaml")
    with pytest.raises(streamseg.SourceError, match="broken: cannot open"):
        with streamseg.Pipeline(config, sources=[Broken()]):
            pass
    assert closed == [True]


@pytest.mark.parametrize(("spec", "kind"), [
    ("clip.mp4", Kind.FILE), ("https://host/v.mp4", Kind.FILE), ("-", Kind.PIPE), ("0", Kind.WEBCAM),
    ("/dev/video2", Kind.WEBCAM), ("rtsp://cam/x", Kind.STREAM), ("http://cam/mjpg/video.cgi", Kind.STREAM),
    ("https://host/live/index.m3u8", Kind.PLAYLIST),
])
def test_a_spec_is_classified_by_its_spelling_without_a_connection(spec: str, kind: Kind) -> None:
    # The playlist's host does not exist: classify must not try it (is_live would, for up to 10 s).
    assert classify(spec) is kind
    assert np.bool_(kind.live) == (kind in (Kind.WEBCAM, Kind.STREAM, Kind.PLAYLIST))
