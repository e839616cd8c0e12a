"""Decoding and encoding with real codecs: timestamps, audio, odd sizes, truncated files."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import streamseg
from streamseg.exceptions import SourceError
from streamseg.sinks.video import VideoSink, encoder_opens, real_time_threads
from streamseg.sources import probe, read_frames
from streamseg.types import Frame, FrameResult, Segmentation

from .conftest import read_video, write_clip


def _segment(src: Path, out: Path, model: Path, **kw) -> list:
    return list(streamseg.segment(src, model=str(model), output=out, batch_size=3, **kw))


def test_variable_frame_rate_timestamps_are_kept(tmp_path: Path, tiny_model: Path) -> None:
    pts = [0, 33, 66, 150, 160, 300, 301, 520, 530, 900]
    src = write_clip(tmp_path / "vfr.mkv", pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "out.mp4"
    results = _segment(src, out, tiny_model)
    assert [r.pts for r in results] == pts
    assert [r.time for r in results] == pytest.approx([p / 1000 for p in pts])
    out_pts, out_tb, frames = read_video(out)
    assert len(frames) == len(pts)
    assert [round(float(p * out_tb), 3) for p in out_pts] == pytest.approx([p / 1000 for p in pts], abs=1e-3)


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(25, 1)])
def test_fractional_rate_is_not_rounded(tmp_path: Path, tiny_model: Path, rate: Fraction) -> None:
    src = tmp_path / "ntsc.mp4"
    container = av.open(str(src), "w")
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(40):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, 1 / rate
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    out = tmp_path / "out.mkv"
    _segment(src, out, tiny_model)
    out_pts, out_tb, _ = read_video(out)
    times = [float(p * out_tb) for p in out_pts]
    assert times[-1] == pytest.approx(39 / float(rate), abs=1e-3)  # no drift after 40 frames


def test_audio_is_copied_without_reencoding(tmp_path: Path, tiny_model: Path) -> None:
    """All of it, as FFmpeg's stream copy keeps it: the source's sound runs 0.5 s past its last frame."""
    src = write_clip(tmp_path / "a.mp4", frames=30, audio=True)
    out = tmp_path / "out.mp4"
    _segment(src, out, tiny_model)
    with av.open(str(src)) as a, av.open(str(out)) as b:
        src_audio = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        out_audio = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
        assert b.streams.audio[0].codec_context.name == "aac"
        assert b.duration / 1e6 == pytest.approx(a.duration / 1e6, abs=0.03)
    assert out_audio == src_audio  # the same packets, byte for byte


def _ts_across_the_clock_wrap(path: Path, frames: int = 60, before: int = 20) -> Path:
    """An MPEG-TS whose 33-bit 90 kHz clock wraps ``before`` frames in, with a tone all along: FFmpeg reads
    the frames before the wrap with negative timestamps, as it does a camera's recording that crossed it."""
    start = 2**33 - before * 3000
    with av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 90000)
        audio = out.add_stream("aac", rate=48000, layout="mono")
        rng = np.random.default_rng(0)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = start + i * 3000, Fraction(1, 90000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        first = start * 48000 // 90000
        tone = (0.3 * np.sin(np.arange(frames * 1600) * 2 * np.pi * 440 / 48000)).astype(np.float32)[None]
        for k in range(0, tone.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, first + k
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_timestamps_before_zero_are_moved_not_hidden(tmp_path: Path, tiny_model: Path, suffix: str) -> None:
    """MP4 and MOV players skip frames before 0: a file that starts there is moved to 0, with its sound."""
    src = _ts_across_the_clock_wrap(tmp_path / "wrap.ts")
    src_pts, src_tb, _ = read_video(src)
    assert src_pts[0] < 0 < src_pts[-1]  # what the test is about
    out = tmp_path / f"out{suffix}"
    _segment(src, out, tiny_model)
    pts, tb, frames = read_video(out)
    assert len(frames) == 60  # every frame plays
    times = [float(p * tb) for p in pts]
    assert times[0] == pytest.approx(0, abs=0.05)  # Matroska moves all by the AAC encoder's priming
    assert [t - times[0] for t in times] == pytest.approx([float((p - src_pts[0]) * src_tb) for p in src_pts],
                                                          abs=1e-3)
    with av.open(str(out)) as c:  # the sound moved with the picture, and covers it
        packets = [p for p in c.demux(c.streams.audio[0]) if p.size]
        audio_start = float(packets[0].pts * packets[0].time_base)
        audio_end = float((packets[-1].pts + packets[-1].duration) * packets[-1].time_base)
    assert abs(audio_start) < 0.05 and audio_end == pytest.approx(2.0, abs=0.1)


def test_no_audio_flag(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "a.mp4", frames=6, audio=True)
    out = tmp_path / "out.mp4"
    _segment(src, out, tiny_model, output__audio=False)
    with av.open(str(out)) as b:
        assert not b.streams.audio


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_odd_frame_size(tmp_path: Path, tiny_model: Path, suffix: str) -> None:
    src = write_clip(tmp_path / "odd.mkv", width=97, height=61, frames=5)
    out = tmp_path / f"out{suffix}"
    results = _segment(src, out, tiny_model, save_masks=tmp_path / "m.jsonl")
    assert all(r.segmentation.masks.shape[1:] == (61, 97) for r in results)
    _, _, frames = read_video(out)
    assert len(frames) == 5
    assert frames[0].shape[:2] == (62, 98)  # padded by one pixel for 4:2:0


def test_annotated_frames_show_the_source(tmp_path: Path, tiny_model: Path) -> None:
    """The overlay is blended over the right frames, in order (not a frame from elsewhere)."""
    src = write_clip(tmp_path / "s.mp4", frames=8)
    _, _, source_frames = read_video(src)
    results = list(streamseg.segment(src, model=str(tiny_model), output=tmp_path / "o.mp4",
                                     render__opacity=0.0, render__labels=False, render__outlines=False))
    for r, original in zip(results, source_frames):
        assert np.abs(r.annotated.astype(int) - original).mean() < 1.0


def test_truncated_file_gives_decodable_frames_with_a_warning(tmp_path: Path, caplog) -> None:
    src = write_clip(tmp_path / "full.mkv", frames=60)
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        frames = list(read_frames(cut))
    assert 5 < len(frames) < 60
    assert "truncated" in caplog.text


def test_audio_that_runs_on_is_not_taken_for_truncated_video(tmp_path: Path, caplog) -> None:
    """Matroska declares no video duration but the file's, which covers the longer audio."""
    src = write_clip(tmp_path / "talk.mkv", frames=30, audio=True)  # the tone runs 0.5 s past the video
    with caplog.at_level(logging.WARNING):
        assert len(list(read_frames(src))) == 30
    assert "truncated" not in caplog.text


def test_a_cover_picture_stream_is_not_taken_for_the_video(tmp_path: Path) -> None:
    """Downloaded videos may carry a thumbnail as an extra video stream, sometimes the first one."""
    path = tmp_path / "with-cover.mkv"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        for packet in [*cover.encode(picture.reformat(format="yuvj420p")), *cover.encode()]:
            container.mux(packet)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
    frames = list(read_frames(path))
    assert len(frames) == 10 and frames[0].image.shape == (64, 96, 3)
    assert (probe(path).width, probe(path).height) == (96, 64)


def test_a_song_with_cover_art_is_not_a_video(tmp_path: Path) -> None:
    """An MP3 whose only picture is its cover: one line that says so, not a one-frame "video"."""
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w") as container:
        sound = container.add_stream("libmp3lame", rate=44100, layout="mono")
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        container.mux([*cover.encode(picture.reformat(format="yuvj420p")), *cover.encode()])
        for i in range(10):
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 44100, i * 1152
            container.mux(sound.encode(samples))
        container.mux(sound.encode())
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["audio", "video"]
    with pytest.raises(SourceError, match="has no video stream, only a cover picture"):
        probe(path)


def test_not_a_video(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello, not a video\n" * 50)
    with pytest.raises(SourceError, match="not a video"):
        probe(bad)


def test_missing_file() -> None:
    with pytest.raises(SourceError, match="no such file"):
        probe("does/not/exist.mp4")


def test_hardware_decoding_gives_the_same_frames_or_falls_back(tmp_path: Path, caplog) -> None:
    """NVDEC where it opens (H.264 decoding is bit-exact), the CPU where it does not: same frames."""
    import torch

    from streamseg.sources import hardware

    hardware._unavailable.cache_clear()  # said once per process: say it again for this test
    src = write_clip(tmp_path / "c.mp4", frames=12)
    software = [f.image for f in read_frames(src)]
    with caplog.at_level(logging.INFO):
        hardware = [f.image for f in read_frames(src, hwaccel="cuda")]
    assert len(hardware) == len(software) == 12
    assert all(np.array_equal(a, b) for a, b in zip(hardware, software))
    if not torch.cuda.is_available():
        assert "hardware decoding unavailable" in caplog.text


def test_output_says_which_colour_matrix_it_was_encoded_with(tmp_path: Path) -> None:
    """Saturated colours survive a round trip through a decoder that follows the file's tags; untagged
    HD output would be read as BT.709 by players and shift them."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (40, 200, 220), (128, 128, 128)]
    image = np.zeros((720, 1280, 3), np.uint8)
    for i, colour in enumerate(colours):
        image[:, i * 200 : (i + 1) * 200] = colour
    out = tmp_path / "o.mp4"
    with VideoSink(out, time_base=Fraction(1, 30), crf=12) as sink:
        for i in range(3):
            frame = Frame(pixels=image, index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            empty = Segmentation("panoptic", [], [], [], [], [], size=(720, 1280))
            sink.write(FrameResult(frame, empty))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.colorspace, stream.codec_context.color_range) == (6, 1)  # BT.601, limited
        decoded = next(container.decode(stream)).to_ndarray(format="rgb24")
    for i, colour in enumerate(colours):
        middle = decoded[300:400, i * 200 + 50 : i * 200 + 150].reshape(-1, 3).mean(0)
        assert np.abs(middle - colour).max() < 4, (colour, middle)


def _ffmpeg_upright(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """What FFmpeg's command line shows: its autorotate filters for the display matrix (fftools'
    ``get_rotation`` takes theta = -rotation; 90 is ``transpose=clock``, 270 ``transpose=cclock``)."""
    theta = -rotation % 360
    filters = {90: [("transpose", "clock")], 180: [("hflip", ""), ("vflip", "")], 270: [("transpose", "cclock")]}
    rgb = frame.reformat(format="rgb24")
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(width=rgb.width, height=rgb.height, format="rgb24", time_base=Fraction(1, 30))]
    nodes += [graph.add(name, args) for name, args in filters[theta]] + [graph.add("buffersink")]
    for a, b in itertools.pairwise(nodes):
        a.link_to(b)
    graph.configure()
    rgb.pts = 0
    graph.push(rgb)
    return graph.pull().to_ndarray(format="rgb24")


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_is_segmented_and_written_upright(tmp_path: Path, tiny_model: Path, rotation: int) -> None:
    """Phone videos store frames sideways with a display matrix: the model, the masks and the output
    see them as a player shows them, and the output needs no matrix of its own."""
    src = write_clip(tmp_path / "phone.mp4", width=96, height=64, frames=6, display_rotation=rotation)
    with av.open(str(src)) as container:
        expected = [_ffmpeg_upright(f, rotation) for f in container.decode(video=0)]
    turned = rotation % 180 != 0
    assert expected[0].shape[:2] == ((96, 64) if turned else (64, 96))
    info = probe(src)
    assert (info.height, info.width) == expected[0].shape[:2]
    as_yuv = list(read_frames(src, yuv=True))  # a GPU's sources would hand on YUV: turned frames go as RGB
    assert all(f.pixel_format == "rgb24" and np.array_equal(f.image, e) for f, e in zip(as_yuv, expected))
    out, masks = tmp_path / "out.mp4", tmp_path / "masks.jsonl"
    results = _segment(src, out, tiny_model, save_masks=masks, render__opacity=0.0, render__labels=False,
                       render__outlines=False)
    assert len(results) == 6
    for result, upright in zip(results, expected):
        assert np.array_equal(result.frame.image, upright)
        assert result.segmentation.size == upright.shape[:2]
    records = [json.loads(line) for line in masks.read_text().splitlines()]
    assert {(r["height"], r["width"]) for r in records} == {expected[0].shape[:2]}
    with av.open(str(out)) as container:
        first = next(container.decode(video=0))
        assert first.rotation == 0
        assert np.abs(first.to_ndarray(format="rgb24").astype(int) - expected[0]).mean() < 3


@pytest.mark.parametrize("rotation", [0, 90])
def test_non_square_pixels_are_kept(tmp_path: Path, tiny_model: Path, rotation: int) -> None:
    """Anamorphic video (DV, HDV, some broadcast recordings) declares its pixel shape; without it the
    output would play squeezed. Turned upright, a pixel's shape turns with it."""
    src = write_clip(tmp_path / "wide.mp4", width=96, height=64, frames=4, display_rotation=rotation,
                     sample_aspect_ratio=Fraction(4, 3))
    shown = Fraction(4, 3) if rotation == 0 else Fraction(3, 4)
    assert probe(src).sample_aspect_ratio == shown
    out = tmp_path / "out.mp4"
    _segment(src, out, tiny_model)
    with av.open(str(out)) as container:
        assert container.streams.video[0].sample_aspect_ratio == shown
    assert probe(write_clip(tmp_path / "square.mp4", frames=2)).sample_aspect_ratio is None


@pytest.mark.parametrize("colors", ["host", "device"])
def test_frame_size_change_midway_is_scaled_not_fatal(tmp_path: Path, tiny_model: Path, caplog, colors: str) -> None:
    """Joined recordings (or a camera reconfigured) change size midway: every frame is kept, later ones
    scaled to the first size as FFmpeg's command line does, with one warning."""
    first = write_clip(tmp_path / "a.ts", width=96, height=64, frames=6)
    second = write_clip(tmp_path / "b.ts", width=160, height=90, frames=6, seed=9)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    _, _, source = read_video(joined)
    assert [f.shape[:2] for f in source] == [(64, 96)] * 6 + [(90, 160)] * 6
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING):
        results = _segment(joined, out, tiny_model, color_conversion=colors, render__opacity=0.0,
                           render__labels=False, render__outlines=False)
    assert [r.segmentation.size for r in results] == [f.shape[:2] for f in source]
    _, _, written = read_video(out)
    assert len(written) == 12 and {f.shape for f in written} == {(64, 96, 3)}
    scaled = cv2.resize(source[-1], (96, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(written[-1].astype(int) - scaled).mean() < 6
    assert caplog.text.count("frame size changed from 96x64 to 160x90") == 1


def test_an_encoder_that_does_not_open_falls_back_when_streamseg_chose_it(tmp_path: Path, caplog) -> None:
    """With --codec auto, NVENC may open for the first outputs and not for the next (consumer GPUs open a
    handful of sessions): such an output is encoded with libx264 instead, with a warning. Here NVENC
    does not open at all, which takes the same path."""
    from streamseg.sinks.video import encoder_opens

    if encoder_opens("h264_nvenc"):
        pytest.skip("NVENC opens on this machine")
    out = tmp_path / "cam.mp4"
    with caplog.at_level(logging.WARNING), VideoSink(out, time_base=Fraction(1, 30), codec="h264_nvenc",
                                                     fallback="libx264") as sink:
        for i in range(4):
            frame = Frame(pixels=np.full((64, 96, 3), 40 * i, np.uint8), index=i, pts=i, time_base=Fraction(1, 30),
                          time=i / 30)
            sink.write(FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(144, 256))))
    assert "h264_nvenc did not open" in caplog.text and sink.codec == "libx264"
    assert len(read_video(out)[2]) == 4
    unused = VideoSink(tmp_path / "no.mp4", time_base=Fraction(1, 30), codec="h264_nvenc")
    with pytest.raises(streamseg.exceptions.SinkError, match="cannot open"), unused:
        unused.write(FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(144, 256))))


def test_segmented_outputs_keep_the_newest_files(tmp_path: Path) -> None:
    """Split every 2 s of wall-clock time: five files for 10 s; with keep=2 only the last two remain,
    each whole (the video plays, every JSON line parses); no other file is touched."""
    from streamseg.sinks.jsonl import JsonlSink
    from streamseg.sinks.segments import SegmentedSink

    bystander = tmp_path / "rec-19990101-000000.mp4"
    bystander.write_bytes(b"not ours")

    def open_video(path: Path, first: FrameResult) -> VideoSink:
        return VideoSink(path, time_base=Fraction(1, 1000), rebase=True)

    def open_masks(path: Path, first: FrameResult) -> JsonlSink:
        sink = JsonlSink(path, wall_clock=True)
        sink.open()
        return sink

    video = SegmentedSink(tmp_path / "rec.mp4", segment_time=2, open_file=open_video, keep=2, stage="encode")
    masks = SegmentedSink(tmp_path / "masks.jsonl", segment_time=2, open_file=open_masks, stage="export")
    start = 1_800_000_000.0  # wall-clock seconds, as live frames carry them
    for i in range(20):
        frame = Frame(pixels=np.full((64, 96, 3), 10 * i, np.uint8), index=i, pts=500 * i,
                      time_base=Fraction(1, 1000), time=start + 0.5 * i)
        result = FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(64, 96)))
        video.write(result)
        masks.write(result)
    video.close()
    masks.close()
    kept = sorted(p for p in tmp_path.glob("rec-*.mp4") if p != bystander)
    assert [str(p) for p in kept] == video.files and len(kept) == 2
    assert [len(read_video(p)[2]) for p in kept] == [4, 4]
    assert bystander.read_bytes() == b"not ours"
    records = sorted(tmp_path.glob("masks-*.jsonl"))
    assert len(records) == 5
    assert [[json.loads(line)["frame"] for line in p.read_text().splitlines()] for p in records] == [
        list(range(k, k + 4)) for k in range(0, 20, 4)]



@pytest.mark.parametrize(("layout", "height"), [("rgb24", 180), ("yuv420p", 180), ("yuv420p", 90)])
def test_frames_go_to_the_encoder_without_a_copy_and_encode_the_same(tmp_path: Path, monkeypatch,
                                                                     layout: str, height: int) -> None:
    """The sink hands its images to FFmpeg without copying them. Each is dropped by the caller right
    after writing, while x264 still holds frames back; a view the zero-copy route refuses is copied.
    Losslessly encoded (crf 0, which also makes x264's output the same run to run), the file is the same,
    packet for packet, as when every image is copied."""
    import gc

    import torch

    from streamseg.inference.color import rgb_to_yuv420
    from streamseg.testing.synthetic import Scene

    scene = Scene(5, aspect=320 / height)

    def drawn(i: int) -> np.ndarray:
        rgb = scene.render(i, 320, height)[0]
        if layout == "rgb24":
            return rgb if i % 3 else np.ascontiguousarray(rgb[:, ::-1])[:, ::-1]  # every third one a view
        return rgb_to_yuv420(torch.from_numpy(rgb)[None])[0].numpy()

    def write(path: Path) -> list[bytes]:
        with VideoSink(path, time_base=Fraction(1, 30), crf=0) as sink:
            for i in range(24):
                frame = Frame(pixels=np.zeros((height, 320, 3), np.uint8), index=i, pts=i, time_base=Fraction(1, 30),
                              time=i / 30)
                empty = Segmentation("panoptic", [], [], [], [], [], size=(height, 320))
                sink.write(FrameResult(frame, empty, drawn(i), drawn_format=layout))
                gc.collect(1)  # the image is gone here but for FFmpeg's reference to it (the young generations: a full
                # collection of the whole suite's heap took 0.3 s a frame)
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(video=0) if p.size]

    share, shared_count = av.VideoFrame.from_numpy_buffer, []

    def counted(*args, **kwargs):
        frame = share(*args, **kwargs)
        shared_count.append(1)
        return frame

    monkeypatch.setattr(av.VideoFrame, "from_numpy_buffer", staticmethod(counted))
    shared = write(tmp_path / "shared.mp4")
    # Every image but the views, and but YUV of a height whose chroma rows are odd (PyAV misplaces them).
    assert len(shared_count) == {("rgb24", 180): 16, ("yuv420p", 180): 24, ("yuv420p", 90): 0}[layout, height]
    monkeypatch.delattr(av.VideoFrame, "from_numpy_buffer")  # as PyAV before 12: every image copied
    assert write(tmp_path / "copied.mp4") == shared
    assert len(shared) == 24
    if layout == "yuv420p":  # and what was written is what was drawn
        with av.open(str(tmp_path / "shared.mp4")) as container:
            decoded = [f.to_ndarray() for f in container.decode(video=0)]
        assert all(np.array_equal(decoded[i], drawn(i)) for i in range(24))


@pytest.mark.parametrize(("threads", "settings"), [(0, b"sliced_threads=0"), (1, b"threads=1 ")])
def test_x264_threads_work_on_whole_frames(tmp_path: Path, threads: int, settings: bytes) -> None:
    """x264 writes its settings into the stream. Left to choose its threads (a GPU machine), it encodes
    several frames at once rather than slicing each one while the caller waits, which capped a GPU run."""
    out = tmp_path / "o.mp4"
    with VideoSink(out, time_base=Fraction(1, 30), threads=threads) as sink:
        for i in range(8):
            frame = Frame(pixels=np.full((144, 256, 3), i * 20, np.uint8), index=i, pts=i, time_base=Fraction(1, 30),
                          time=i / 30)
            sink.write(FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(144, 256))))
    assert settings in out.read_bytes()
    assert len(read_video(out)[0]) == 8


def test_nv12_planes_read_through_dlpack_are_the_frame() -> None:
    """NVDEC's frames kept on the GPU are read plane by plane through DLPack (PyAV exports host frames
    the same way, so the assembly and its row padding are checked here): the (H * 3 / 2, W) tensor
    is PyAV's own NV12 array, and the host copy made of it keeps the tags the RGB conversion reads."""
    import torch

    from streamseg.sources.pixels import _on_host, frame_pixels, nv12_tensor

    rng = np.random.default_rng(0)
    nv12 = rng.integers(16, 235, (180 * 3 // 2, 200), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(nv12, format="nv12").reformat(format="yuv420p").reformat(format="nv12")
    frame.colorspace, frame.color_range = 1, 1  # BT.709, limited
    assert frame.planes[0].line_size > 200  # rows padded, as a decoder's are
    tensor = nv12_tensor(frame)
    assert tensor.dtype == torch.uint8 and tensor.is_contiguous()
    assert np.array_equal(tensor.numpy(), frame.to_ndarray())
    host = _on_host(frame)
    assert (int(host.colorspace), int(host.color_range)) == (1, 1)
    assert np.array_equal(frame_pixels(host, yuv=False)[0], frame_pixels(frame, yuv=False)[0])


def test_a_frame_may_hold_nv12_as_a_tensor() -> None:
    import torch

    nv12 = np.random.default_rng(1).integers(16, 235, (90, 64), dtype=np.uint8)
    common = dict(index=0, pts=0, time_base=Fraction(1, 30), time=0.0, pixel_format="nv12", matrix="bt709")
    on_host, as_tensor = Frame(pixels=nv12, **common), Frame(pixels=torch.from_numpy(nv12), **common)
    assert (as_tensor.height, as_tensor.width) == (60, 64)
    assert np.array_equal(as_tensor.image, on_host.image)
    with pytest.raises(ValueError, match="only NV12"):
        Frame(pixels=torch.zeros(60, 64, 3, dtype=torch.uint8), index=0, pts=0, time_base=Fraction(1, 30), time=0.0)


def test_several_encoders_share_the_cores() -> None:
    from streamseg.sinks.video import encoder_threads

    assert encoder_threads(1, outputs=8, cores=16) == 1  # beside a model on the CPU: one each, always
    assert encoder_threads(0, outputs=1, cores=16) == 0  # one output: the encoder's own choice
    assert [encoder_threads(0, outputs=n, cores=16) for n in (2, 4, 16)] == [8, 4, 2]


def _encode_scene(path: Path, frames: int = 12, **sink_options) -> Path:
    """Write a moving scene through a VideoSink (no model): what the encoder settings alone do."""
    from streamseg.testing.synthetic import Scene

    scene = Scene(3, aspect=160 / 96)
    with VideoSink(path, time_base=Fraction(1, 30), **sink_options) as sink:
        for i in range(frames):
            image = scene.render(i, 160, 96)[0]
            frame = Frame(pixels=image, index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            sink.write(FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(96, 160)), image))
    return path


@pytest.mark.parametrize("codec", ["h264", "hevc", "libvpx-vp9", "libsvtav1"])
def test_crf_sets_the_quality_of_every_encoder(tmp_path: Path, codec: str) -> None:
    """--crf reaches the encoder whether it is named by format (h264, hevc) or by encoder, and VP9 and AV1
    (whose scales run to 63) as well as x264 and x265: better quality, larger file."""
    from streamseg.sinks.video import encoder_opens, pick_encoder

    encoder = pick_encoder(codec, accelerated=False)
    if not encoder_opens(encoder):
        pytest.skip(f"{codec} is not in this FFmpeg")
    sizes = {crf: _encode_scene(tmp_path / f"crf{crf}.mkv", codec=encoder, crf=crf).stat().st_size for crf in (8, 45)}
    assert sizes[8] > 1.5 * sizes[45], sizes


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="SVT-AV1 makes its threads real-time only when run as root")
def test_an_av1_encoder_does_not_make_the_run_real_time(tmp_path: Path) -> None:
    """SVT-AV1, opened as root (as in most containers), puts the opening thread and its own threads in
    SCHED_FIFO at priority 99: every thread the run starts afterwards would inherit it, and busy real-time
    threads starve the machine (CI's froze). The encoder still works, its threads at normal priority."""
    if not encoder_opens("libsvtav1"):
        pytest.skip("libsvtav1 is not in this FFmpeg")
    assert real_time_threads() == []  # the check above opened it too
    image = np.zeros((64, 96, 3), np.uint8)
    with VideoSink(tmp_path / "o.mkv", time_base=Fraction(1, 30), codec="libsvtav1") as sink:
        for i in range(3):
            frame = Frame(pixels=image, index=i, pts=i, time_base=Fraction(1, 30), time=i / 30)
            sink.write(FrameResult(frame, Segmentation("panoptic", [], [], [], [], [], size=(64, 96)), image))
        while_open = real_time_threads()  # the encoder's own threads are running now
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    assert while_open == [] and later == [os.SCHED_OTHER]
    assert len(read_video(tmp_path / "o.mkv")[0]) == 3


def test_hevc_in_mp4_is_tagged_for_apple_players(tmp_path: Path) -> None:
    from streamseg.sinks.video import encoder_opens

    if not encoder_opens("libx265"):
        pytest.skip("libx265 is not in this FFmpeg")
    out = _encode_scene(tmp_path / "o.mp4", codec="libx265")
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"
    assert len(read_video(out)[0]) == 12


def _clip_with_sound(path: Path, codec: str, rate: int, sound: list[av.AudioFrame]) -> Path:
    """12 frames of 96x64 H.264 noise, with ``sound`` encoded by ``codec`` (mono, ``rate`` Hz)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream(codec, rate=rate, layout="mono")
        rng = np.random.default_rng(0)
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for chunk in sound:
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def test_webm_output_is_vp9_and_keeps_only_sound_webm_can_hold(tmp_path: Path, tiny_model: Path, caplog) -> None:
    """.webm gets VP9 (WebM takes no H.264); AAC sound cannot go in, which is said, and the video is whole."""
    src = write_clip(tmp_path / "a.mp4", frames=12, audio=True)
    out = tmp_path / "out.webm"
    with caplog.at_level(logging.WARNING):
        _segment(src, out, tiny_model)
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams] == ["vp9"]
    assert len(read_video(out)[0]) == 12
    assert "audio codec aac cannot be copied into this container ('webm' format does not support" in caplog.text
    assert "; use .mp4 or .mkv or .mov" in caplog.text


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_a_cameras_g711_sound_goes_only_where_it_fits(tmp_path: Path, tiny_model: Path, caplog, suffix: str) -> None:
    """G.711, the sound of many cameras, fits MOV alone: the warning for the others names it."""
    silence = av.AudioFrame.from_ndarray(np.zeros((1, 3200), np.int16), format="s16", layout="mono")
    silence.sample_rate, silence.pts = 8000, 0
    src = _clip_with_sound(tmp_path / "cam.mov", "pcm_mulaw", 8000, [silence])
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING):
        _segment(src, out, tiny_model)
    with av.open(str(out)) as container:
        kept = sorted(s.codec_context.name for s in container.streams)
    if suffix == ".mov":
        assert kept == ["h264", "pcm_mulaw"] and "cannot be copied" not in caplog.text
    else:
        assert kept == ["h264"] and "audio codec pcm_mulaw cannot be copied" in caplog.text
        assert caplog.text.rstrip().endswith("; use .mov")


def test_webm_output_keeps_opus_sound(tmp_path: Path, tiny_model: Path) -> None:
    tone = (0.3 * np.sin(np.arange(48000 // 2) * 2 * np.pi * 440 / 48000)).astype(np.float32)[None]
    chunks = []
    for k in range(0, tone.shape[1], 960):
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 960]), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, k
        chunks.append(chunk)
    src = _clip_with_sound(tmp_path / "opus.mkv", "libopus", 48000, chunks)
    out = tmp_path / "out.webm"
    _segment(src, out, tiny_model)
    with av.open(str(out)) as container:
        assert sorted(s.codec_context.name for s in container.streams) == ["opus", "vp9"]
        assert any(p.size for p in container.demux(audio=0))
    assert len(read_video(out)[0]) == 12


def _packet_times(path: Path, kind: str) -> list[float]:
    with av.open(str(path)) as container:
        return [float(p.pts * p.time_base) for p in container.demux(**{kind: 0}) if p.size]


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_joined_recordings_play_on_with_their_sound(tmp_path: Path, tiny_model: Path, via: str) -> None:
    """``cat a.ts b.ts``: the second clock starts again at the first's start. Its frames follow on, a frame
    apart (not 1/90000 s), its sound with them, and the records' times only grow, as FFmpeg plays it."""
    import subprocess
    import sys

    from .conftest import ROOT

    halves = [write_clip(tmp_path / f"{n}.ts", frames=30, width=160, height=96, audio=True, seed=n)
              for n in (1, 2)]
    joined = tmp_path / "ab.ts"
    joined.write_bytes(b"".join(h.read_bytes() for h in halves))
    out, masks = tmp_path / "out.mp4", tmp_path / "m.jsonl"
    args = ["-o", str(out), "--save-masks", str(masks), "--model", str(tiny_model)]
    if via == "file":
        proc = subprocess.run([sys.executable, "-m", "streamseg", "segment", str(joined), *args],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
    else:
        with joined.open("rb") as pipe:  # a real pipe, not a file on standard input
            cat = subprocess.Popen(["cat"], stdin=pipe, stdout=subprocess.PIPE)
            proc = subprocess.run([sys.executable, "-m", "streamseg", "segment", "-", *args], stdin=cat.stdout,
                                  capture_output=True, text=True, timeout=300, cwd=ROOT)
            cat.wait()
    assert proc.returncode == 0, proc.stderr
    assert "joined recordings?" in proc.stderr
    video = _packet_times(out, "video")
    video.sort()
    assert len(video) == 60
    gaps = np.diff(video)
    assert gaps.min() > 1 / 30 - 1e-3, gaps.min()  # a frame apart, every one
    second = video[30]
    assert second > video[29]
    sound = _packet_times(out, "audio")
    source_sound = sum(len(_packet_times(h, "audio")) for h in halves)
    assert len(sound) == source_sound and sound == sorted(sound)  # all of it, in order
    # The second half's sound stands to its picture as it did in its own file.
    first_sound = len(_packet_times(halves[0], "audio"))
    lead = _packet_times(halves[1], "video")[0] - _packet_times(halves[1], "audio")[0]
    assert second - sound[first_sound] == pytest.approx(lead, abs=2e-3)
    times = [json.loads(line)["time"] for line in masks.read_text().splitlines()]
    assert len(times) == 60 and np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(video[-1] - video[0], abs=1e-3)


def test_a_long_gap_in_a_matroska_file_is_kept(tmp_path: Path, tiny_model: Path) -> None:
    """Only formats made to be joined have their restarted clocks moved: a 12 s gap in a Matroska file (a
    camera that paused its recording) is the file's own, and stays."""
    pts = [0, 33, 66, 12066, 12099, 12132]
    src = write_clip(tmp_path / "gap.mkv", pts=pts, time_base=Fraction(1, 1000))
    results = _segment(src, tmp_path / "out.mkv", tiny_model)
    assert [r.pts for r in results] == pts
