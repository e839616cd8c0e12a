"""``build_sinks``: the one place where a run's config becomes its outputs, one group per source plus those
that show every source; and the checks of those outputs made before any work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..containers import names_folder
from ..exceptions import ConfigError
from ..sources.base import Kind, Source, classify, is_stdin
from ..sources.live import LIVE_TIME_BASE
from ..types import FrameResult
from ..urls import redact
from .base import Sink
from .coco import CocoSink
from .images import ImageSink, is_image_output
from .jsonl import JsonlSink
from .labels import LabelSink
from .paths import check_distinct, output_path, segments_of
from .preview import WindowPreviewSink
from .segments import SegmentedSink
from .stream import StreamSink, stream_open_args, stream_url
from .tracks import TracksSink
from .video import VideoSink, check_encoder, check_writable, encoder_threads, pick_encoder
from .web import WebPreviewSink

__all__ = ["SinkSet", "build_sinks", "check_outputs", "open_sinks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkSet:
    """A run's outputs: each source's own, and the shared ones that take every source's results.

    Attributes:
        outputs: what the run writes, as its summary names it (segmented files as ``rec-*.mp4``, URLs
            without credentials).
        web: the live page, where one is served.
    """

    by_source: dict[str, list[Sink]]
    shared: list[Sink]
    outputs: list[str] = field(default_factory=list)
    web: WebPreviewSink | None = None

    def all(self) -> list[Sink]:
        return [*(sink for group in self.by_source.values() for sink in group), *self.shared]


def check_outputs(config: Config, tags: dict[str, str]) -> None:
    """Refuse, before any work, outputs that cannot be written or would overwrite an input, a stream URL
    that several sources cannot share, and an encoder this FFmpeg lacks.

    Raises:
        ConfigError, SinkError: naming the output.
    """
    out, several = config.output, len(tags) > 1
    folder = out.video is not None and names_folder(out.video)
    if folder and not Path(out.video.rstrip("/") or "/").parent.is_dir():
        raise ConfigError(f"output.video: the folder {out.video} cannot be made: its parent does not exist")
    if (out.video and (folder or is_image_output(out.video))
            and not all(classify(src) is Kind.IMAGES for src in config.sources)):
        raise ConfigError(f"output.video: {out.video} takes images; a video's output is a "
                          ".mp4, .mkv, .mov or .webm file")
    paths = [output_path(template, tag, several)
             for template in (None if folder else out.video, out.masks, out.tracks, out.coco)
             if template for tag in tags.values()]
    # Standard input that is a file was taken as that file when the pipeline was made.
    check_distinct(paths, [src for src in config.sources if classify(src).local and "://" not in src
                           and not is_stdin(src)])
    for path in paths:
        check_writable(path)
    for tag in tags.values() if out.stream else []:
        stream_url(out.stream, tag, several)  # several sources need a URL each
    if out.video and out.codec != "auto" and not folder and not is_image_output(out.video):
        check_encoder(out.codec, out.video)
    if out.segment_time and not all(classify(src).live for src in config.sources):
        log.warning("--segment-time splits live recordings only: a file source's outputs stay one file each")


def build_sinks(config: Config, sources: Sequence[Source], tags: dict[str, str], *, accelerated: bool,
                codec_threads: int, stopped: threading.Event, on_quit: Callable[[], None]) -> SinkSet:
    """The outputs ``config`` asks for, made and not yet opened (see :func:`open_sinks`).

    Args:
        sources: the run's sources, opened (a file's time base and rate are known).
        tags: what each source adds to its outputs' names.
        accelerated: the model runs on a GPU, whose encoder is tried first.
        codec_threads: the run's codec threads (see :class:`~streamseg.runtime.plan.RunPlan`).
        stopped: set when the run is stopped early (a file's recording then ends its sound with its frames).
        on_quit: what a preview window's q or Esc does.
    """
    out = config.output
    codec = pick_encoder(out.codec, accelerated, out.video)
    # Chosen by streamseg, a hardware encoder that opens once may still run out of sessions later.
    fallback = pick_encoder("auto", False, out.video) if out.codec == "auto" else None
    encoder = {"codec": codec, "crf": out.crf, "preset": out.preset, "fallback": fallback,
               "threads": encoder_threads(codec_threads, len(sources) if out.video else 0)}
    several = len(tags) > 1  # of the whole job's sources (see Pipeline's part_of), not only these
    by_source: dict[str, list[Sink]] = {}
    outputs: list[str] = []
    for source in sources:
        group: list[Sink] = []
        tag = tags[source.name]
        if out.video and (names_folder(out.video) or is_image_output(out.video)):
            path = out.video if names_folder(out.video) else output_path(out.video, tag, several)
            group.append(ImageSink(path))
            outputs.append(path)
        elif out.video:
            path = output_path(out.video, tag, several)
            group.append(_recording(config, source, path, encoder, stopped))
            outputs.append(segments_of(path) if source.live and out.segment_time else path)
        if out.stream:
            url = stream_url(out.stream, tag, several)
            # The codec the container allows, not the recording's (VP9 for a .webm): H.264 unless told.
            group.append(_publisher(config, source, url, {**encoder, "codec": pick_encoder(out.codec, accelerated)}))
            outputs.append(redact(url))
        if out.masks:
            path = output_path(out.masks, tag, several)
            if source.live and out.segment_time:  # split like the recording, files named alike
                group.append(SegmentedSink(path, segment_time=out.segment_time, open_file=_open_jsonl,
                                           keep=out.keep_segments, stage=JsonlSink.stage, wants_masks=True))
                outputs.append(segments_of(path))
            else:
                group.append(JsonlSink(path, wall_clock=source.live))
                outputs.append(path)
        if out.tracks:
            path = output_path(out.tracks, tag, several)
            group.append(TracksSink(path))
            outputs.append(path)
        if out.labels:
            group.append(LabelSink(out.labels, tag))
            outputs.append(out.labels)
        if out.coco:
            path = output_path(out.coco, tag, several)
            group.append(CocoSink(path))
            outputs.append(path)
        by_source[source.name] = group
    shared: list[Sink] = []
    if out.show:
        shared.append(WindowPreviewSink(on_quit=on_quit))
    web = WebPreviewSink(out.serve, [s.name for s in sources], token=out.serve_token) if out.serve else None
    if web is not None:
        shared.append(web)
    return SinkSet(by_source, shared, outputs, web)


def open_sinks(sinks: Sequence[Sink]) -> None:
    """Open every sink, in order; where one fails, close those already opened and raise its error."""
    opened: list[Sink] = []
    try:
        for sink in sinks:
            sink.open()
            opened.append(sink)
    except BaseException:
        for sink in opened:  # leave nothing half-open behind
            sink.close()
        raise


def _sound(config: Config, source: Source) -> Any:
    """The source's sound for one more output, where outputs copy sound."""
    return source.sound() if config.output.audio else None


def _recording(config: Config, source: Source, path: str, encoder: dict[str, Any],
               stopped: threading.Event) -> Sink:
    """A source's video file: a file's keeps its timestamps and all of its sound; a live source's counts
    from its first frame, split by time where asked."""
    out = config.output
    if source.live and out.segment_time:
        sound = _sound(config, source)  # each segment takes up the sound where the last one stopped

        def open_video(file: Path, first: FrameResult) -> VideoSink:
            return VideoSink(file, time_base=first.frame.time_base, rebase=True, audio_from=sound, **encoder)

        return SegmentedSink(path, segment_time=out.segment_time, open_file=open_video, keep=out.keep_segments,
                             stage=VideoSink.stage, wants_annotated=True, takes_yuv=True)
    if source.live:
        return VideoSink(path, time_base=LIVE_TIME_BASE, rebase=True, audio_from=_sound(config, source), **encoder)
    info = source.info
    if info is None:
        raise ConfigError(f"{source.name}: a source that is not live must say what its video is (Source.info)")
    # A time range is a clip of its own: it starts at 0, and its sound is the range's.
    ranged = config.start is not None or config.end is not None
    return VideoSink(path, time_base=info.time_base, rate=info.average_rate, audio_from=_sound(config, source),
                     sample_aspect_ratio=info.sample_aspect_ratio, stopped=None if ranged else stopped,
                     rebase=ranged, **encoder)


def _publisher(config: Config, source: Source, url: str, encoder: dict[str, Any]) -> StreamSink:
    """A source's published stream: a file's sent at its own pace, a live source's as frames come."""
    info = source.info
    time_base, rate = (info.time_base, info.average_rate) if info is not None else (LIVE_TIME_BASE, None)
    sound = _sound(config, source)  # each session takes it up from its own first frame

    def open_video() -> VideoSink:  # one session with the server
        return VideoSink(url, time_base=time_base, rate=rate, rebase=True, low_latency=True, audio_from=sound,
                         open_args=stream_open_args(url), **encoder)

    return StreamSink(url, open_video=open_video, pace=not source.live)


def _open_jsonl(path: Path, first: FrameResult) -> JsonlSink:
    sink = JsonlSink(path, wall_clock=True)
    sink.open()
    return sink
