"""Video files (and any URL FFmpeg opens as a finite stream), decoded with PyAV."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..demuxing import Damage, Timeline, decode, flush, packets
from ..exceptions import SourceError
from ..types import Frame
from .base import Source, SourceContext
from .hardware import hardware_decoder
from .pixels import display_rotation, frame_pixels

__all__ = ["FileSource", "VideoInfo", "describe", "main_video_stream", "probe", "read_frames", "stamped", "within"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a file's first video stream says of itself.

    Attributes:
        path: the file.
        width, height: frame size in pixels, as shown (after the display rotation).
        time_base: unit of the stream's timestamps.
        average_rate: mean frame rate, exact (e.g. 30000/1001), None if unknown.
        frames: number of frames the container declares, or an estimate from the duration, or None.
        start_time: first timestamp in ``time_base`` units (0 if unknown).
        has_audio: whether the file has an audio stream that an output could copy.
        rotation: degrees counter-clockwise that players turn the stored frames by (phone videos);
            decoded frames come upright.
        sample_aspect_ratio: the shape of a pixel, as shown, where it is not square (anamorphic video),
            else None.
    """

    path: str
    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction | None
    frames: int | None
    start_time: int
    has_audio: bool
    rotation: int = 0
    sample_aspect_ratio: Fraction | None = None


def _open(path: str, hwaccel: Any = None) -> av.container.InputContainer:
    if "://" not in path and not os.path.exists(path):
        raise SourceError(f"{path}: no such file")
    if "://" not in path and os.path.isdir(path):
        raise SourceError(f"{path}: is a directory, not a video file")
    if hwaccel is not None:
        try:
            return _with_video(path, av.open(path, mode="r", hwaccel=hwaccel))
        except (av.FFmpegError, OSError) as exc:  # the device opened, this file's decoder did not
            log.warning("%s: hardware decoding unavailable (%s); decoding on the CPU", path, exc)
    try:
        container = av.open(path, mode="r")
    except av.error.InvalidDataError as exc:
        raise SourceError(f"{path}: not a video file, or damaged (FFmpeg: {exc.strerror or exc})") from exc
    except av.FFmpegError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    return _with_video(path, container)


def main_video_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The video a player would show: FFmpeg's best video stream, never a cover picture or thumbnail
    track that some files carry as an extra (sometimes first) video stream."""
    return container.streams.best("video") or next(
        (s for s in container.streams.video if not _is_picture(s)), container.streams.video[0])


def _is_picture(stream: av.VideoStream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _with_video(path: str, container: av.container.InputContainer) -> av.container.InputContainer:
    if not container.streams.video or all(_is_picture(s) for s in container.streams.video):
        pictures = bool(container.streams.video)
        container.close()
        raise SourceError(f"{path}: has no video stream" + (", only a cover picture" if pictures else ""))
    return container


def probe(path: str | Path) -> VideoInfo:
    """Read a file's header.

    Raises:
        SourceError: the file is missing, is not a video or has no video stream.
    """
    path = str(path)
    container = _open(path)
    try:
        stream = main_video_stream(container)
        return describe(path, container, stream, _first_rotation(container, stream))
    finally:
        container.close()


def describe(path: str, container: av.container.InputContainer, stream: av.VideoStream, rotation: int) -> VideoInfo:
    """What an open container's video ``stream`` says of itself; ``rotation`` is its first frame's."""
    codec = stream.codec_context
    frames = stream.frames or None
    if frames is None and stream.duration and stream.average_rate:
        frames = int(round(stream.duration * stream.time_base * stream.average_rate))
    elif frames is None and container.duration and stream.average_rate:
        frames = int(round(container.duration / av.time_base * stream.average_rate))
    if not codec.width or not codec.height:
        raise SourceError(f"{path}: video stream has no frame size")
    width, height = codec.width, codec.height
    sar = getattr(stream, "sample_aspect_ratio", None) or codec.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar != 1 else None
    if rotation in (90, 270):
        width, height = height, width
        sar = 1 / sar if sar else None
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        time_base=stream.time_base or Fraction(1, 90000),
        average_rate=stream.average_rate,
        frames=frames,
        start_time=stream.start_time or 0,
        has_audio=bool(container.streams.audio),
        rotation=rotation,
        sample_aspect_ratio=sar,
    )


def _first_rotation(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """The display rotation of the first frame (decoders attach the container's matrix to frames)."""
    try:
        for decoded in container.decode(stream):
            return display_rotation(decoded)
    except av.FFmpegError:  # what fails to decode is reported when the frames are read
        pass
    return 0


def read_frames(
    path: str | Path, *, name: str | None = None, threads: int = 0, hwaccel: str | None = None, yuv: bool = False,
    gpu_frames: bool = False, seek: float | None = None,
) -> Iterator[Frame]:
    """Decode every frame of a file's main video stream, in presentation order, as RGB (or, with ``yuv``,
    as the decoder's YUV 4:2:0 where a GPU can convert it: see :func:`~.pixels.frame_pixels`).

    A damaged file yields every frame that decodes, skipping and counting the packets that do not; one cut
    short yields the frames that decode. Either logs a warning instead of failing.
    ``threads``: decoder threads (0: FFmpeg's choice; 1 when the model computes on the same CPU cores). With
    frame threads, a corrupt packet also costs the frames the other threads were decoding.
    ``hwaccel``: "cuda" or "cuda:N" decodes with NVDEC where the device, the driver and the codec allow,
    and on the CPU otherwise. ``gpu_frames`` (with ``yuv``): NVDEC's frames of 8-bit 4:2:0 video stay on
    the GPU, as NV12 tensors, with no copy through the host. ``seek``: start decoding at the keyframe at or
    before this many seconds from the start (frames are then numbered from there: see :func:`within`).

    Raises:
        SourceError: the file cannot be opened, or fails before its first frame.
    """
    path = str(path)
    name = name if name is not None else path
    on_gpu = gpu_frames and yuv
    container = _open(path, hardware_decoder(hwaccel, on_gpu=on_gpu))
    if on_gpu and main_video_stream(container).codec_context.pix_fmt != "yuv420p":  # 10-bit, 4:2:2, full range
        container.close()
        container = _open(path, hardware_decoder(hwaccel))
    try:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if seek:
            time_base = stream.time_base or Fraction(1, 90000)
            container.seek((stream.start_time or 0) + int(seek / time_base), stream=stream, backward=True)
        damage = Damage()
        pictures = _pictures(container, stream, damage, Timeline.of(container, path))
        last_pts = yield from stamped(pictures, stream, path=path, name=name, yuv=yuv)
        damage.report(path)
        time_base, start = stream.time_base or Fraction(1, 90000), stream.start_time or 0
        declared = _declared_seconds(container, stream)
        reached = float((last_pts - start) * time_base)
        frame_s = float(1 / stream.average_rate) if stream.average_rate else 0.1
        if declared is not None and reached + 3 * frame_s < declared:
            # Damage the demuxer could not read past (Matroska that lost its clusters) ends a file early too.
            why = "it is corrupt past there" if damage.packets else "the file may be truncated"
            log.warning("%s: video ends at %.2f s but the file declares %.2f s; %s", path, reached, declared, why)
    finally:
        container.close()


def _pictures(container: av.container.InputContainer, stream: av.VideoStream, damage: Damage,
              timeline: Timeline) -> Iterator[av.VideoFrame]:
    """Every picture of ``stream`` that decodes, going on past damaged packets and restarted clocks."""
    for packet in packets(container, (stream,), damage, timeline):
        yield from decode(stream, packet, damage)
    yield from flush(stream, damage)


def stamped(decoded: Iterable[av.VideoFrame], stream: av.VideoStream, *, path: str, name: str,
            yuv: bool) -> Generator[Frame, None, int]:
    """The :class:`Frame` of each decoded picture of ``stream``, numbered and timed; returns the last pts.

    Frames with no timestamp (some raw streams) continue the last one. A decoding error after the first
    frame ends the video with a warning (a file cut short); one before it, or no frame at all, raises
    SourceError.
    """
    time_base = stream.time_base or Fraction(1, 90000)
    start = stream.start_time or 0
    step = int(1 / (stream.average_rate * time_base)) if stream.average_rate else 1
    index = 0
    last_pts: int | None = None
    try:
        clock = time.perf_counter()
        for picture in decoded:
            pts = picture.pts
            if pts is None:
                pts = start if last_pts is None else last_pts + step
            last_pts = pts
            pixels, pixel_format, matrix = frame_pixels(picture, yuv)
            now = time.perf_counter()
            yield Frame(
                pixels=pixels,
                pixel_format=pixel_format,
                matrix=matrix,
                index=index,
                pts=pts,
                time_base=time_base,
                time=float((pts - start) * time_base),
                source=name,
                captured=time.monotonic(),
                decode_s=now - clock,
            )
            index += 1
            clock = time.perf_counter()
    except av.FFmpegError as exc:
        if index == 0:
            raise SourceError(f"{path}: cannot decode: {exc.strerror or exc}") from exc
        log.warning("%s: stopped decoding after %d frames (%s); the file may be truncated", path, index,
                    exc.strerror or exc)
    if last_pts is None:
        raise SourceError(f"{path}: no decodable video frame")
    return last_pts


def _declared_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """How long the file says its video runs: the stream's own duration (MP4, or Matroska's per-stream
    DURATION tag), else the file's, but only when the video is all it holds (audio that runs on, or a
    cover picture, would make whole video files look truncated)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION", "")
    if match := re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", tag.strip()):
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def within(frames: Iterator[Frame], start: float | None, end: float | None,
           rate: Fraction | None) -> Iterator[Frame]:
    """The frames from ``start`` up to (not including) ``end`` seconds, read from a seek to ``start``: each
    numbered by its time at the file's average ``rate`` (its number in the file, for a constant rate),
    since the frames before the seek were never decoded."""
    for frame in frames:
        if end is not None and frame.time >= end:
            return
        if start is not None and frame.time < start - 1e-6:
            continue
        number = round(frame.time * rate) if rate and start else frame.index
        yield dataclasses.replace(frame, index=number) if number != frame.index else frame


class FileSource(Source):
    """A video file (or a URL of one): probed when opened, every frame decoded, its sound reopened by each
    output that copies it."""

    live = False

    def __init__(self, spec: str, name: str, *, start: float | None = None, end: float | None = None) -> None:
        self.spec = spec
        self.name = name
        self.start = start
        self.end = end
        self._context = SourceContext()

    def open(self, context: SourceContext) -> None:
        self._context = context
        self.info = probe(self.spec)

    def frames(self) -> Iterator[Frame]:
        ctx = self._context
        frames = read_frames(self.spec, name=self.name, threads=ctx.threads, hwaccel=ctx.hwaccel, yuv=ctx.yuv,
                             gpu_frames=ctx.gpu_frames, seek=self.start)
        if self.start is None and self.end is None:
            return frames
        return within(frames, self.start, self.end, self.info.average_rate if self.info else None)

    def sound(self) -> str | None:
        return self.info.path if self.info is not None and self.info.has_audio else None

