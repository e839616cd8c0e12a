"""YUV frames handed on as decoded and turned into RGB on the model's device, against FFmpeg's own conversion."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import streamseg
from streamseg.inference.color import yuv420_to_rgb
from streamseg.sources import read_frames
from streamseg.testing.synthetic import Scene
from streamseg.types import Frame

from .conftest import SAMPLE_CLIP, SAMPLE_MODEL, read_video


def _tagged_clip(path: Path, *, colorspace: int = 2, pix_fmt: str = "yuv420p", size=(160, 96)) -> Path:
    """A few frames of a synthetic scene, with the colour matrix (AVColorSpace) the file declares."""
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.colorspace = colorspace
        for i in range(4):
            image, _ = Scene(3, aspect=width / height).render(i, width, height)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.colorspace, frame.pts = colorspace, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(("colorspace", "matrix", "size"),
                         [(2, "bt601", (160, 96)), (6, "bt601", (160, 90)), (1, "bt709", (480, 270)),
                          (2, "bt709", (1280, 720))])
def test_yuv_frames_keep_the_decoder_layout_and_convert_like_ffmpeg(tmp_path: Path, colorspace: int, matrix: str,
                                                                     size: tuple[int, int]) -> None:
    width, height = size  # heights of 90 and 270: chroma planes of an odd number of rows
    clip = _tagged_clip(tmp_path / "c.mp4", colorspace=colorspace, size=size)
    rgb = list(read_frames(clip))
    yuv = list(read_frames(clip, yuv=True))
    assert [f.pixel_format for f in rgb] == ["rgb24"] * 4
    layout = ("yuv420p", matrix, (height * 3 // 2, width))
    assert [(f.pixel_format, f.matrix, f.pixels.shape) for f in yuv] == [layout] * 4
    for a, b in zip(rgb, yuv):
        assert (b.height, b.width) == (height, width)
        np.testing.assert_array_equal(b.image, a.image)  # on the host: FFmpeg's conversion, as before
        on_device = yuv420_to_rgb(torch.from_numpy(b.pixels)[None], b.pixel_format, b.matrix)[0].numpy()
        assert np.abs(on_device.astype(int) - a.image).max() <= 2
    # The wrong matrix is visibly wrong: the check above can tell them apart.
    other = "bt601" if matrix == "bt709" else "bt709"
    wrong = yuv420_to_rgb(torch.from_numpy(yuv[0].pixels)[None], "yuv420p", other)[0].numpy()
    assert np.abs(wrong.astype(int) - rgb[0].image).max() > 8


@pytest.mark.parametrize(("size", "matrix"), [((1280, 720), "ITU709"), ((720, 576), "ITU601"), ((640, 360), "ITU601")])
def test_untagged_video_is_read_as_players_read_it(tmp_path: Path, size: tuple[int, int], matrix: str) -> None:
    """A file that names no colour matrix: players (mpv, browsers) take BT.709 for HD and BT.601 below,
    where FFmpeg takes BT.601 at any size. The model, and the overlay, see what the viewer saw."""
    clip = _tagged_clip(tmp_path / "c.mp4", colorspace=2, size=size)
    with av.open(str(clip)) as container:
        decoded = list(container.decode(video=0))
    for frame, original in zip(read_frames(clip), decoded):
        assert int(original.colorspace) == 2
        np.testing.assert_array_equal(frame.image, original.to_ndarray(format="rgb24", src_colorspace=matrix))
    if matrix == "ITU709":  # and that is not FFmpeg's default: the check above tells them apart
        assert np.abs(frame.image.astype(int) - original.to_ndarray(format="rgb24")).max() > 8


def test_nv12_layout_converts_like_planar(tmp_path: Path) -> None:
    """NVDEC's frames download as NV12 (interleaved U and V)."""
    decoded = next(av.open(str(_tagged_clip(tmp_path / "c.mp4"))).decode(video=0))
    planar = torch.from_numpy(decoded.to_ndarray())[None]
    nv12 = torch.from_numpy(decoded.reformat(format="nv12").to_ndarray())[None]
    np.testing.assert_array_equal(yuv420_to_rgb(nv12, "nv12", "bt601"), yuv420_to_rgb(planar, "yuv420p", "bt601"))
    frame = Frame(pixels=nv12[0].numpy(), index=0, pts=0, time_base=Fraction(1, 30), time=0.0, pixel_format="nv12")
    # On the host too: FFmpeg's own NV12 route smooths the colour at edges (tens of levels apart there),
    # so NV12 is laid out as planar first, and both decoders give the same pixels.
    np.testing.assert_array_equal(frame.image, decoded.to_ndarray(format="rgb24"))
    assert np.abs(decoded.reformat(format="nv12").to_ndarray(format="rgb24").astype(int)
                  - decoded.to_ndarray(format="rgb24")).max() > 8


@pytest.mark.parametrize(("size", "colorspace"), [((160, 96), 2), ((1280, 720), 2), ((480, 270), 1)])
def test_nv12_frames_give_the_software_decoders_rgb(tmp_path: Path, size: tuple[int, int], colorspace: int) -> None:
    """NVDEC hands on NV12 where the CPU's decoder hands on planar YUV: converted to RGB on the host
    (no GPU conversion asked for), both must give the same pixels, HD (read as BT.709) included."""
    from streamseg.sources.pixels import frame_pixels

    with av.open(str(_tagged_clip(tmp_path / "c.mp4", size=size, colorspace=colorspace))) as container:
        for decoded in container.decode(video=0):
            planar, _, _ = frame_pixels(decoded, yuv=False)
            nv12, layout, _ = frame_pixels(decoded.reformat(format="nv12"), yuv=False)
            assert layout == "rgb24"
            np.testing.assert_array_equal(nv12, planar)


@pytest.mark.parametrize(("how", "why"), [("full", "full range"), ("odd", "odd size"), ("bt2020", "unknown matrix")])
def test_frames_the_device_cannot_convert_come_as_rgb(tmp_path: Path, how: str, why: str) -> None:
    kwargs = {"full": {"pix_fmt": "yuvj420p"}, "odd": {"pix_fmt": "yuv444p", "size": (161, 95)},
              "bt2020": {"colorspace": 9}}[how]
    clip = _tagged_clip(tmp_path / "c.mp4", **kwargs)
    rgb = list(read_frames(clip))
    yuv = list(read_frames(clip, yuv=True))
    assert all(f.pixel_format == "rgb24" for f in yuv), why
    assert all(np.array_equal(a.image, b.image) for a, b in zip(rgb, yuv))


def test_frame_checks_its_pixels() -> None:
    common = dict(index=0, pts=0, time_base=Fraction(1, 30), time=0.0)
    with pytest.raises(ValueError, match="RGB pixels"):
        Frame(pixels=np.zeros((4, 6), np.uint8), **common)
    assert Frame(pixels=np.zeros((9, 6), np.uint8), pixel_format="yuv420p", **common).height == 6
    with pytest.raises(ValueError, match="4:2:0"):
        Frame(pixels=np.zeros((8, 6), np.uint8), pixel_format="yuv420p", **common)  # no whole height
    with pytest.raises(ValueError, match="4:2:0"):
        Frame(pixels=np.zeros((6, 5), np.uint8), pixel_format="yuv420p", **common)  # odd width
    with pytest.raises(ValueError, match="matrix"):
        Frame(pixels=np.zeros((6, 4), np.uint8), pixel_format="yuv420p", matrix="bt2020", **common)
    with pytest.raises(ValueError, match="pixel_format"):
        Frame(pixels=np.zeros((6, 4), np.uint8), pixel_format="yuv422p", **common)


def test_pipeline_converting_on_the_device_agrees_with_the_host(tmp_path: Path) -> None:
    """The whole run with YUV frames converted by torch (what a GPU does; forced here on the CPU), with the
    shipped model, whose segments are real: the same segments to within a few pixels, the same overlay."""
    kwargs = dict(model=str(SAMPLE_MODEL), task="panoptic", batch_size=3)
    runs = {}
    for place in ("host", "device"):
        results = streamseg.segment(SAMPLE_CLIP, output=tmp_path / f"{place}.mp4", color_conversion=place,
                                    device="cpu", **kwargs)  # on a GPU, NVDEC would hand on NV12
        runs[place] = [r for _, r in zip(range(9), results)]
        results.close()
    assert all(r.frame.pixel_format == "rgb24" for r in runs["host"])
    assert all(r.frame.pixel_format == "yuv420p" for r in runs["device"])
    for a, b in zip(runs["host"], runs["device"]):
        np.testing.assert_array_equal(a.frame.image, b.frame.image)
        assert len(a.segmentation) == len(b.segmentation) > 0
        assert (a.segmentation.label_map() == b.segmentation.label_map()).float().mean() >= 0.99
        # What the encoder gets: the overlay in YUV, made on the device, as swscale would have made it.
        assert (a.drawn_format, b.drawn_format) == ("rgb24", "yuv420p")
        swscale = av.VideoFrame.from_ndarray(a.annotated, format="rgb24").reformat(format="yuv420p").to_ndarray()
        assert np.abs(swscale.astype(int) - b.drawn).mean() < 1.0  # drawn over frames within 2 levels
        assert np.abs(a.annotated.astype(int) - b.annotated).mean() < 2.0  # RGB again: 4:2:0 loses colour detail
    # The files: each as far from the host's RGB overlay as lossy encoding puts the host's own file.
    reference = [r.annotated for r in runs["host"]]
    error = {}
    for place in ("host", "device"):
        decoded = read_video(tmp_path / f"{place}.mp4")[2]
        assert len(decoded) >= 9
        error[place] = np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(decoded, reference)])
    assert error["device"] <= error["host"] + 0.5, error


def test_rgb_to_yuv_matches_ffmpeg(tmp_path: Path) -> None:
    from streamseg.inference.color import rgb_to_yuv420

    rgb = next(read_frames(SAMPLE_CLIP)).image
    ours = rgb_to_yuv420(torch.from_numpy(rgb)[None])[0].numpy().astype(int)
    ffmpeg = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray().astype(int)
    luma = rgb.shape[0]
    assert np.abs(ours[:luma] - ffmpeg[:luma]).max() <= 1
    assert np.abs(ours[luma:] - ffmpeg[luma:]).mean() < 0.5  # chroma: a 2x2 mean, FFmpeg's filter differs at edges
    back = av.VideoFrame.from_ndarray(ours.astype(np.uint8), format="yuv420p").to_ndarray(format="rgb24")
    assert np.abs(back.astype(int) - rgb).mean() < 2.0


def test_only_encoders_get_yuv(tmp_path: Path) -> None:
    """A sink that wants the drawn frames as RGB (a preview, the caller's own) keeps them RGB."""
    from streamseg import Pipeline, load_config

    class Collect:
        wants_annotated = True

        def __init__(self) -> None:
            self.formats: list[str] = []

        def write(self, result) -> None:
            self.formats.append(result.drawn_format)

        def close(self) -> None:
            pass

    sink = Collect()
    cfg = load_config(None, sources=(str(SAMPLE_CLIP),), model__name=str(SAMPLE_MODEL), color_conversion="device",
                      output__video=str(tmp_path / "o.mp4"), duration=30.0)
    with Pipeline(cfg, sinks=[sink]) as pipeline:
        for r in pipeline.results():
            if r.index == 5:
                pipeline.stop()
    assert sink.formats and set(sink.formats) == {"rgb24"}
