"""The run plan: what a run decides from its config and device, checked without running anything."""

from __future__ import annotations

import pytest

from streamseg import load_config
from streamseg.inference.preprocess import PreprocessSpec
from streamseg.runtime.plan import OVERSIZED, drawing, oversized, plan

from .conftest import ROOT

SAMPLE = ROOT / "configs" / "sample.yaml"


def _config(**overrides):
    return load_config(SAMPLE, sources=("clip.mp4",), **overrides)


def test_a_cpu_run_over_files_gives_the_forward_pass_the_cores_and_yields_to_it() -> None:
    run = plan(_config(), "cpu", [False], cores=16)
    assert (run.torch_threads, run.codec_threads, run.yielding) == (16, 1, True)
    assert (run.decoder, run.yuv, run.gpu) == (None, False, False)


def test_live_sources_or_a_published_stream_keep_latency_first() -> None:
    assert not plan(_config(), "cpu", [False, True], cores=4).yielding
    assert not plan(_config(output__stream="rtsp://host/x"), "cpu", [False], cores=4).yielding


@pytest.mark.parametrize(("device", "decoder", "colors", "expected"), [
    ("cuda", "auto", "auto", ("cuda", True)),
    ("cuda:1", "auto", "auto", ("cuda:1", True)),
    ("cuda", "cpu", "host", (None, False)),
    ("cuda", "cuda:0", "auto", ("cuda:0", True)),
    ("cpu", "auto", "device", (None, True)),
    ("mps", "auto", "auto", (None, False)),
])
def test_the_decoder_and_the_colour_path_follow_the_device(device, decoder, colors, expected) -> None:
    run = plan(_config(decoder=decoder, color_conversion=colors), device, [False], cores=8)
    assert (run.decoder, run.yuv) == expected
    assert (run.torch_threads, run.codec_threads) == ((8, 1) if device == "cpu" else (None, 0))


def test_encoders_take_yuv_only_when_they_alone_see_the_drawn_frames() -> None:
    gpu = plan(_config(), "cuda", [False], cores=8)
    # A video file and a JSONL: the encoder alone sees drawn frames.
    alone = drawing(gpu, [True, False], [True, False], annotate=False)
    assert alone.draw and alone.yuv_out
    both = drawing(gpu, [True, True], [True, False], annotate=False)  # beside a web page, which wants RGB
    assert both.draw and not both.yuv_out
    asked = drawing(gpu, [True], [True], annotate=True)  # the caller asked for RGB overlays
    assert asked.draw and not asked.yuv_out
    assert not drawing(gpu, [False], [False], annotate=False).draw
    assert not drawing(plan(_config(), "cpu", [False], cores=2), [True], [True], annotate=False).yuv_out


def test_frames_far_larger_than_the_model_sees_are_named() -> None:
    spec = PreprocessSpec(shortest_edge=None, longest_edge=None, height=96, width=96)
    assert oversized("scan", 96 * 4, 96 * 4, spec) is None
    side = 96 * 5  # 25 times the model's input: past OVERSIZED
    assert 25 > OVERSIZED
    warning = oversized("scan", side, side, spec)
    assert warning is not None and warning.startswith("scan: 480x480 frames are 25 times the model's input (96x96)")
