"""The pipeline: sources → batcher → model runner → sinks, one thread per stage.

Threads and what links them::

    producer "source:<name>" ─┐ (one bounded queue per source)
    producer "source:<name>" ─┼─> "infer" ──(1 batch)──> "post" ──(results)──> "sinks" ──(results)──> caller
                              ┘   (forward)              (post-process, draw)    │  ^── source status events
                                                                 "sink:<source>:<stage>" (one thread per output)

"sinks" hands each result to the threads of its outputs (the video, the masks, a preview), which
write it side by side, and passes it on once all of them have. The pipeline owns every thread: it
starts them in :meth:`Pipeline.start` and joins them in :meth:`Pipeline.close`. :meth:`Pipeline.stop`
asks for a graceful end (sources stop reading, outputs finish their files with what is done);
:meth:`Pipeline.abort` makes the outputs drop what is left and close at once. An exception in any stage stops the run and is re-raised in the caller
with its original traceback. Memory is bounded by the queue sizes, however long the run.

Files keep every frame (their producers block); live sources keep only their newest frame, so a
slow model never lets latency grow, and a stalled camera never holds the others back.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .runtime.allocator import keep_freed_memory, release_freed_memory
from .annotators.masks import MaskAnnotator
from .runtime.batcher import Batcher, produce
from .runtime.channels import POLL_S, EndOfStream, Failure, get, put
from .config import Config
from .exceptions import Aborted, ConfigError, SourceError, StreamsegError
from .inference.loading import guess_task, load_model, resolve_device
from .inference.preprocess import PreprocessSpec, resized_size
from .inference.runner import ModelRunner
from .inference.threads import ThreadTuner, set_torch_threads, yield_to_forward
from .sinks.jsonl import JsonlSink
from .sinks.preview import WindowPreviewSink
from .sinks.segments import SegmentedSink
from .sinks.stream import StreamSink, stream_open_args, stream_url
from .sinks.video import VideoSink, check_encoder, check_writable, encoder_threads, pick_encoder
from .sinks.web import WebPreviewSink
from .sources.file import VideoInfo, probe, read_frames
from .sources.hardware import decoder_problem
from .sources.live import (
    LIVE_TIME_BASE,
    TROUBLE,
    Backoff,
    LiveAudio,
    SourceStatus,
    is_live,
    is_webcam,
    read_live,
    read_stream,
    read_webcam,
)
from .sources.pipe import STDIN, PipedVideo, is_piped, is_stdin, stdin_file
from .runtime.stats import StatsBoard
from .audio import AudioFeed
from .types import FrameResult
from .urls import redact, url_name

__all__ = ["Pipeline", "RunSummary", "Sink", "output_path", "output_tags", "source_names"]

log = logging.getLogger(__name__)
stats_log = logging.getLogger("streamseg.runtime.stats")

JOIN_TIMEOUT_S = 10.0
# Signals that end a run as Ctrl-C does, outputs finished: SIGTERM is how systemd and `docker stop`
# end a service, SIGHUP what a closed terminal (a dropped ssh session) sends.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Sink(Protocol):
    """What an output's thread needs from it (``write`` and ``close`` are called from that thread only)."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


_SKIPPED = "skipped"  # an output's answer for a result it did not write (after a failure, or aborting)
_CLOSED = "closed"  # an output's last answer: it is closed


@dataclass
class _Output:
    """A sink with its own thread: results in through ``inbox``, one answer per result out through ``done``."""

    sink: Sink
    inbox: queue.Queue
    done: queue.Queue


@dataclass
class _Pending:
    """A result handed to its outputs, and those that have not yet answered for it."""

    item: FrameResult
    waiting: list[_Output]


def _stage(sink: Sink) -> str:
    """The name of a sink's time in ``FrameResult.stats``."""
    return getattr(sink, "stage", type(sink).__name__)


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass
class RunSummary:
    """What a finished run did."""

    frames: int = 0
    seconds: float = 0.0
    signal: int | None = None  # the signal that stopped the run early (SIGINT for Ctrl-C), if one did
    outputs: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.signal is not None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def source_names(sources: tuple[str, ...] | list[str]) -> list[str]:
    """Short unique names for logs, records and output files; never with credentials."""
    names: list[str] = []
    for src in sources:
        if is_stdin(src):
            base = "stdin"
        elif is_webcam(src):
            base = f"webcam{src}" if src.isdigit() else src.rsplit("/", 1)[-1]
        elif "://" in src:
            base = url_name(src)
        else:
            base = src.rstrip("/").rsplit("/", 1)[-1] or src
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


# How many times the model's input a frame may hold before it is said to be far larger: a 4K frame for
# a model that takes 1333x800 is about 8 times; an 8192x8192 scan, 63.
OVERSIZED = 16


def warn_if_oversized(name: str, width: int, height: int, spec: PreprocessSpec) -> None:
    """Warn when a source's frames are far larger than what the model sees: it sees them scaled down, but the
    overlay and the exports are made at the source's size, which then takes most of the time and memory."""
    model_h, model_w = resized_size(height, width, spec)
    if width * height > OVERSIZED * model_w * model_h:
        log.warning("%s: %dx%d frames are %.0f times the model's input (%dx%d): drawing and the exports, made at "
                    "the source's size, will take most of the time and memory; scale the video down first "
                    "(ffmpeg -vf scale=1920:-2) unless full-size masks are needed", name, width, height,
                    width * height / (model_w * model_h), model_w, model_h)


def _file_key(path: str) -> tuple | None:
    """What makes two names one file: the device and inode of a file that exists (a hard link, ``./x`` and
    ``x``, a link to it), else where its name resolves. None for a device (``/dev/null``), which takes any
    number of writers."""
    try:
        found = os.stat(path)
    except OSError:
        return ("path", str(Path(path).resolve()))
    return ("inode", found.st_dev, found.st_ino) if stat.S_ISREG(found.st_mode) else None


def check_distinct(outputs: list[str], inputs: list[str]) -> None:
    """Refuse an output that is an input (writing it would destroy the source) or that another output names
    too (two writers in one file lose half of each).

    Raises:
        ConfigError: naming the two.
    """
    sources = {key: src for src in inputs if (key := _file_key(src)) is not None}
    seen: dict[tuple, str] = {}
    for path in outputs:
        key = _file_key(path)
        if key is None:
            continue
        if key in sources:
            raise ConfigError(f"{path}: is also an input ({sources[key]}); writing it would destroy the source")
        if key in seen:
            raise ConfigError(f"{seen[key]} and {path} are the same file: give each output its own")
        seen[key] = path


def output_tags(names: list[str], sources: tuple[str, ...] | list[str]) -> dict[str, str]:
    """What each source adds to its output files' names: a file's name without its extension
    (``out-street.mp4``, not ``out-street.mp4.mp4``) where that stays unique, else its whole name."""
    stems = {name: Path(name).stem if "://" not in src and not is_live(src) and Path(name).stem else name
             for name, src in zip(names, sources)}
    counts = {stem: list(stems.values()).count(stem) for stem in stems.values()}
    return {name: stem if counts[stem] == 1 else name for name, stem in stems.items()}


def _segments_of(path: str) -> str:
    """How the summary names a segmented output: ``rec-*.mp4``."""
    return str(Path(path).with_name(f"{Path(path).stem}-*{Path(path).suffix}"))


def _beside_forward(target: Callable[..., None], yields: bool, *args: Any) -> None:
    """A stage thread's body on a CPU run, beside the forward pass's thread (see inference.threads): one
    torch thread, so that no second OpenMP team exists, and over files the lowest priority."""
    set_torch_threads(1)
    if yields:
        yield_to_forward()
    target(*args)


def _open_jsonl(path: Path, first: FrameResult) -> JsonlSink:
    sink = JsonlSink(path, wall_clock=True)
    sink.open()
    return sink


def output_path(template: str, source: str, several: bool) -> str:
    """``out.mp4`` for a single source, ``out-<source>.mp4`` for each of several."""
    if not several:
        return template
    path = Path(template)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)
    return str(path.with_name(f"{path.stem}-{safe}{path.suffix}"))


class Pipeline:
    """Runs one segmentation job; use it as a context manager.

    Example:
        >>> config = load_config("configs/sample.yaml", sources=("samples/shapes.mp4",), output__video="out.mp4")
        >>> with Pipeline(config) as pipeline:
        ...     summary = pipeline.run()

    Args:
        config: the whole job: sources, model, thresholds, batching, rendering, outputs.
        sinks: extra outputs, given every source's results; each is written from a thread of its own.
        masks_to_host: copy masks to host memory for every result (the Python API wants them);
            otherwise only when an output needs them.
        profile: exact per-stage timings in ``FrameResult.stats`` (syncs the device after each stage).
        annotate: draw every result (``FrameResult.annotated``), as RGB, whether an output shows it or not.
    """

    def __init__(self, config: Config, *, sinks: list[Sink] | None = None, masks_to_host: bool = False,
                 profile: bool = False, annotate: bool = False) -> None:
        if not config.sources:
            raise ConfigError("sources: at least one source is needed")
        if sum(map(is_stdin, config.sources)) > 1:
            raise ConfigError("sources: standard input (-) can be read by one source only")
        if any(map(is_stdin, config.sources)) and (file := stdin_file()):  # `< clip.mp4`: a file after all
            config = dataclasses.replace(config, sources=tuple(file if is_stdin(s) else s for s in config.sources))
        self.config = config
        self.names = source_names(config.sources)
        self._tags = output_tags(self.names, config.sources)
        self.live = {name: is_live(src) for name, src in zip(self.names, config.sources)}
        self.infos: dict[str, VideoInfo] = {}
        self._pipes: dict[str, PipedVideo] = {}  # standard input, read once for frames and sound
        self._sounds: dict[str, LiveAudio] = {}  # cameras' sound, for their recordings
        self._live_origin = 0.0  # time.time() that live frames and sound count from
        self.task = ""
        self.runner: ModelRunner | None = None
        self.outputs: list[str] = []
        self.web: WebPreviewSink | None = None
        self._extra_sinks = list(sinks or [])
        self._masks_to_host = masks_to_host or bool(config.output.masks)
        self._profile = profile
        self._annotate = annotate
        self._state = State.NEW
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._wakeup = threading.Event()
        self._post_done = threading.Event()  # post-processing has ended (see _infer_loop)
        self._threads: list[threading.Thread] = []
        self._results: queue.Queue = queue.Queue(maxsize=config.batching.queue_size)
        self._events: queue.Queue = queue.Queue(maxsize=1000)
        self._last_state: dict[str, str] = {}
        self._finished = False
        self._deadline: float | None = None
        self._timed_out = False  # the run reached config.duration
        self._codec_threads = 0
        self._decoder: str | None = None  # CUDA device for NVDEC decoding of files and streams, or None
        self._yuv = False  # sources hand on YUV frames, which the model's device turns into RGB
        self._torch_threads: int | None = None  # the model's CPU threads, when it runs on the CPU
        self._yielding = False  # threads other than the forward pass's run at the lowest priority
        self._keeps_memory = False  # freed host memory kept for reuse (see allocator)
        self.final_stats: list[dict] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Pipeline:
        try:
            self.start()
        except BaseException:
            self.close()  # what start changed (the caller's torch threads, the allocator) is put back
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Check inputs and outputs, load the model, start every thread."""
        if self._state is not State.NEW:
            raise RuntimeError(f"a pipeline runs once; this one is {self._state.value}")
        cfg = self.config
        several = len(self.names) > 1
        outputs = [output_path(template, self._tags[name], several)
                   for template in (cfg.output.video, cfg.output.masks) if template for name in self.names]
        # Standard input that is a file was taken as that file in __init__.
        check_distinct(outputs, [src for src in cfg.sources if "://" not in src and not is_webcam(src)
                                 and not is_stdin(src)])
        for path in outputs:
            check_writable(path)
        for name in self.names if cfg.output.stream else []:
            stream_url(cfg.output.stream, self._tags[name], several)  # several sources need a URL each
        if cfg.output.video and cfg.output.codec != "auto":
            check_encoder(cfg.output.codec, cfg.output.video)
        if cfg.decoder not in ("auto", "cpu") and (problem := decoder_problem(cfg.decoder)):
            # As --device cuda is refused where there is no CUDA: what was asked for cannot be done.
            raise ConfigError(f"decoder: {cfg.decoder!r} requested but NVDEC cannot decode here ({problem})")
        if cfg.output.segment_time and not all(self.live.values()):
            log.warning("--segment-time splits live recordings only: a file source's outputs stay one file each")
        self.infos = {name: probe(src) for name, src in zip(self.names, cfg.sources)
                      if not self.live[name] and not is_piped(src)}
        sound = bool((cfg.output.video or cfg.output.stream) and cfg.output.audio)
        self._pipes = {name: PipedVideo(self._stop, audio=sound, path=STDIN if is_stdin(src) else src,
                                        wait_s=cfg.duration)
                       for name, src in zip(self.names, cfg.sources) if is_piped(src)}
        if resolve_device(cfg.model.device).type == "cpu":
            # The forward pass's thread takes every core; this thread keeps one, so that its OpenMP team
            # never exists beside the forward pass's (see inference.threads). close() gives it back.
            self._torch_threads = torch.get_num_threads()
            set_torch_threads(1)
            # Over files, throughput first; from live sources, or published as a paced stream, latency.
            self._yielding = not any(self.live.values()) and not cfg.output.stream
        loaded = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
        self.task = cfg.model.task if cfg.model.task != "auto" else guess_task(cfg.model.name, loaded.id2label)
        gpu = loaded.device.type == "cuda"
        # A model on the CPU already uses every core: codecs then get one thread each, not a pool each.
        self._codec_threads = 1 if loaded.device.type == "cpu" else 0
        if cfg.decoder != "auto":
            self._decoder = None if cfg.decoder == "cpu" else cfg.decoder
        elif gpu:
            self._decoder = str(loaded.device)
        self._yuv = cfg.color_conversion == "device" or (cfg.color_conversion == "auto" and gpu)
        for name, pipe in self._pipes.items():
            self.infos[name] = pipe.probe(threads=self._codec_threads)
        for name, info in self.infos.items():
            warn_if_oversized(name, info.width, info.height, loaded.spec)
        self._live_origin = time.time()
        if (cfg.output.video or cfg.output.stream) and cfg.output.audio:
            self._sounds = {name: LiveAudio(self._live_origin, name) for name, src in zip(self.names, cfg.sources)
                            if self.live[name] and not is_webcam(src)}
        sinks_by_source, shared = self._open_sinks(accelerated=gpu)
        drawing_for = [s for s in [*shared, *(s for group in sinks_by_source.values() for s in group)]
                       if getattr(s, "wants_annotated", False)]
        draw = bool(drawing_for) or self._annotate
        # Encoders take YUV: made on the GPU when they are the only ones to see the drawn frames.
        yuv_out = self._yuv and not self._annotate and all(getattr(s, "takes_yuv", False) for s in drawing_for)
        color_by = cfg.render.color_by if cfg.render.color_by != "auto" else "class"
        annotator = MaskAnnotator(cfg.render.opacity, cfg.render.outlines, cfg.render.labels, color_by)
        self.runner = ModelRunner(
            loaded, self.task, cfg.postprocess, annotator=annotator if draw else None,
            masks_to_host=self._masks_to_host, compile=cfg.model.compile, profile=self._profile,
            channels_last=cfg.model.channels_last, yuv_out=yuv_out,
            cuda_graphs=cfg.model.cuda_graphs, batch_size=cfg.batching.batch_size,
        )
        keep_freed_memory()
        self._keeps_memory = True
        source_queues: dict[str, queue.Queue] = {}
        for name, src in zip(self.names, cfg.sources):
            live = self.live[name]
            q: queue.Queue = queue.Queue(maxsize=cfg.live.queue_size if live else cfg.batching.queue_size)
            source_queues[name] = q
            self._spawn(f"source:{name}", produce, self._frames(name, src), q, self._stop, self._wakeup, name, live)
        batcher = Batcher(source_queues, cfg.batching.batch_size, cfg.batching.max_wait_ms / 1000, self._wakeup,
                          live=frozenset(n for n, v in self.live.items() if v))
        forwarded: queue.Queue = queue.Queue(maxsize=1)  # one batch in flight between the two halves
        handoff: queue.Queue = queue.Queue(maxsize=cfg.batching.queue_size)
        board = StatsBoard(self.live)
        self._spawn("infer", self._infer_loop, batcher, forwarded, forward=True)
        self._spawn("post", self._post_loop, forwarded, handoff)
        drop = threading.Event()  # set by the sink stage on a failure: outputs stop writing and close

        def output_threads(owner: str, group: list[Sink]) -> list[_Output]:
            outs = [_Output(sink, queue.Queue(maxsize=cfg.batching.queue_size), queue.Queue()) for sink in group]
            for out in outs:
                self._spawn(f"sink:{owner}:{_stage(out.sink)}", self._output_loop, out, drop)
            return outs

        outputs = {name: output_threads(name, group) for name, group in sinks_by_source.items()}
        self._spawn("sinks", self._sink_loop, handoff, outputs, output_threads("all", shared), board, drop)
        if cfg.duration is not None:
            self._deadline = time.monotonic() + cfg.duration
        self._state = State.RUNNING

    def _frames(self, name: str, src: str) -> Callable[[], Iterator]:
        if name in self._pipes:
            return lambda: self._pipes[name].frames(name, yuv=self._yuv)
        if not self.live[name]:
            return lambda: read_frames(src, name=name, threads=self._codec_threads, hwaccel=self._decoder,
                                       yuv=self._yuv, gpu_frames=self.config.gpu_frames)
        live = self.config.live
        if is_webcam(src):
            connect = read_webcam(src, stall_s=live.stall_timeout_s)
        else:
            connect = read_stream(src, transport=live.transport, stall_s=live.stall_timeout_s,
                                  open_s=live.open_timeout_s, hwaccel=self._decoder, yuv=self._yuv,
                                  audio=self._sounds.get(name))
        backoff = Backoff(initial=live.reconnect_initial_s, cap=live.reconnect_max_s)
        log.info("%s: %s", name, redact(src))
        return lambda: read_live(connect, name=name, stop=self._stop, report=self._report, backoff=backoff,
                                 origin=self._live_origin)

    def _report(self, status: SourceStatus) -> None:
        """Called by a producer thread for its own source: log the change, queue it for the stats."""
        changed = self._last_state.get(status.source) != status.state
        self._last_state[status.source] = status.state
        if not changed or status.state == "connecting":
            level = logging.DEBUG
        else:  # going live or ending is news, not trouble
            level = logging.WARNING if status.state in TROUBLE else logging.INFO
        stats_log.log(level, "%s: %s%s", status.source, status.state, f" ({status.detail})" if status.detail else "")
        try:
            self._events.put_nowait(status)
        except queue.Full:
            pass

    def _open_sinks(self, accelerated: bool) -> tuple[dict[str, list[Sink]], list[Sink]]:
        opened: list[Sink] = []
        try:
            return self._build_sinks(accelerated, opened)
        except BaseException:
            for sink in opened:  # a later output failed to open: leave nothing half-open behind
                sink.close()
            raise

    def _build_sinks(self, accelerated: bool, opened: list[Sink]) -> tuple[dict[str, list[Sink]], list[Sink]]:
        out = self.config.output
        codec = pick_encoder(out.codec, accelerated, out.video)
        # Chosen by streamseg, a hardware encoder that opens once may still run out of sessions later.
        fallback = pick_encoder("auto", False, out.video) if out.codec == "auto" else None
        threads = encoder_threads(self._codec_threads, len(self.names) if out.video else 0)
        encoder = {"codec": codec, "crf": out.crf, "preset": out.preset, "threads": threads,
                   "fallback": fallback}
        several = len(self.names) > 1
        # A camera's sound for its recording (each of whose segments takes up where the last one stopped).
        sounds = {name: self._sound_for(name) for name in self._sounds if out.video}

        def open_video(file: Path, first: FrameResult) -> VideoSink:  # a live recording's next segment
            return VideoSink(file, time_base=first.frame.time_base, rebase=True, audio_from=sounds.get(first.source),
                             **encoder)

        by_source: dict[str, list[Sink]] = {}
        for name in self.names:
            group: list[Sink] = []
            if out.video:
                path = output_path(out.video, self._tags[name], several)
                if self.live[name] and out.segment_time:
                    group.append(SegmentedSink(path, segment_time=out.segment_time, open_file=open_video,
                                               keep=out.keep_segments, stage=VideoSink.stage, wants_annotated=True,
                                               takes_yuv=True))
                    path = _segments_of(path)
                elif self.live[name]:
                    group.append(VideoSink(path, time_base=LIVE_TIME_BASE, rebase=True, audio_from=sounds.get(name),
                                           **encoder))
                else:
                    info = self.infos[name]
                    group.append(VideoSink(
                        path, time_base=info.time_base, rate=info.average_rate, audio_from=self._sound_for(name),
                        sample_aspect_ratio=info.sample_aspect_ratio, stopped=self._stop, **encoder,
                    ))
                self.outputs.append(path)
            if out.stream:
                url = stream_url(out.stream, self._tags[name], several)
                # The codec the container allows, not the recording's (VP9 for a .webm): H.264 unless told.
                group.append(self._stream_sink(name, url, {**encoder, "codec": pick_encoder(out.codec, accelerated)}))
                self.outputs.append(redact(url))
            if out.masks:
                path = output_path(out.masks, self._tags[name], several)
                if self.live[name] and out.segment_time:  # split like the recording, files named alike
                    group.append(SegmentedSink(path, segment_time=out.segment_time, open_file=_open_jsonl,
                                               keep=out.keep_segments, stage=JsonlSink.stage))
                    path = _segments_of(path)
                else:
                    sink = JsonlSink(path, wall_clock=self.live[name])
                    sink.open()
                    opened.append(sink)
                    group.append(sink)
                self.outputs.append(path)
            by_source[name] = group
        shared: list[Sink] = []
        if out.show:
            shared.append(WindowPreviewSink(on_quit=self.stop))
        if out.serve:
            self.web = WebPreviewSink(out.serve, self.names, token=out.serve_token)
            self.web.open()
            opened.append(self.web)
            shared.append(self.web)
        return by_source, shared + self._extra_sinks

    def _stream_sink(self, name: str, url: str, encoder: dict[str, Any]) -> StreamSink:
        info = self.infos.get(name)
        time_base, rate = (info.time_base, info.average_rate) if info is not None else (LIVE_TIME_BASE, None)
        sound = self._sound_for(name)  # each session takes it up from its own first frame

        def open_video() -> VideoSink:  # one session with the server
            return VideoSink(url, time_base=time_base, rate=rate, rebase=True, low_latency=True, audio_from=sound,
                             open_args=stream_open_args(url), **encoder)

        return StreamSink(url, open_video=open_video, pace=not self.live[name])

    def _sound_for(self, name: str) -> str | AudioFeed | None:
        """The sound of source ``name`` for one more output to copy: a file's path (reopened by each output),
        a camera's or a pipe's feed of its own (read once, so each output takes a copy); None without."""
        if not self.config.output.audio:
            return None
        if name in self._sounds:
            return self._sounds[name].feed()
        if name in self._pipes:
            return self._pipes[name].feed()
        info = self.infos.get(name)
        return info.path if info is not None and info.has_audio else None

    def _spawn(self, name: str, target: Callable[..., None], *args: Any, forward: bool = False) -> None:
        """Start a stage's thread. On a CPU run the ``forward`` pass's thread takes every core and the
        others make way for it (see :func:`_beside_forward`)."""
        if self._torch_threads is not None and not forward:
            target = functools.partial(_beside_forward, target, self._yielding)
        thread = threading.Thread(target=target, args=args, name=f"streamseg-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Ask for a graceful end: stop reading, finish the outputs with what is done."""
        self._stop.set()

    def abort(self) -> None:
        """End now: drop undelivered results, close the outputs."""
        self._abort.set()
        self._stop.set()

    def close(self) -> None:
        """Stop every stage, join every thread, close every output. Safe to call twice."""
        if self._state is State.CLOSED:
            return
        self._stop.set()
        if not self._finished:
            self._abort.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.0f s", thread.name, JOIN_TIMEOUT_S)
        if not any(thread.is_alive() for thread in self._threads):  # else one may still read it
            for pipe in self._pipes.values():
                pipe.close()
            for sound in self._sounds.values():
                sound.close()
        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)  # the caller's own again, and the default for new threads
        if self._keeps_memory:
            release_freed_memory()
            self._keeps_memory = False
        self._state = State.CLOSED

    # -- stage bodies (each runs in its own thread) ----------------------------------------------

    def _infer_loop(self, batcher: Batcher, out: queue.Queue) -> None:
        """Forward passes, one batch ahead of post-processing (which runs in ``_post_loop``)."""
        assert self.runner is not None
        tuner = None
        if self._torch_threads is not None:
            set_torch_threads(self._torch_threads)
            tuner = ThreadTuner(self._torch_threads) if self._torch_threads > 1 else None
        try:
            if tuner:
                tuner.tick()
            while True:
                batch = batcher.next_batch(self._stop)
                if batch is None:
                    break
                if not put(out, self.runner.forward(batch), self._abort):
                    return
                if tuner and (threads := tuner.tick()) is not None:
                    set_torch_threads(threads)
            put(out, EndOfStream(), self._abort)
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            put(out, Failure.capture(exc, "inference"), self._abort)
            self._stop.set()
        finally:
            self._outlive_post()

    def _outlive_post(self) -> None:
        """Keep this thread, and the OpenMP workers it leads, until post-processing has ended. A CPU run
        once hung on its last batch, post-processing spinning in ``einsum`` beside a spinning OpenMP
        worker, as this thread ended: suspected, not shown, to be OpenMP's workers winding down while the
        other thread's parallel region starts."""
        while not (self._post_done.wait(POLL_S) or self._abort.is_set()):
            pass

    def _post_loop(self, inbox: queue.Queue, out: queue.Queue) -> None:
        """Post-processing, drawing and download of each forwarded batch, in order."""
        assert self.runner is not None
        try:
            while True:
                item = get(inbox, self._abort)
                if item is None:
                    return
                if isinstance(item, (EndOfStream, Failure)):
                    put(out, item, self._abort)
                    return
                for result in self.runner.finish(item):
                    if not put(out, result, self._abort):
                        return
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            put(out, Failure.capture(exc, "post-processing"), self._abort)
            self._stop.set()
        finally:
            self._post_done.set()

    def _output_loop(self, out: _Output, drop: threading.Event) -> None:
        """One output, in its own thread: writes its results in order, answers each with a token (the
        seconds it took, _SKIPPED, or a Failure), and closes the output at the end, answering _CLOSED."""
        failed = False
        try:
            while True:
                item = get(out.inbox, self._abort)
                if item is None or isinstance(item, EndOfStream):
                    break
                token: Any = _SKIPPED
                if not (failed or drop.is_set() or self._abort.is_set()):
                    clock = time.perf_counter()
                    try:
                        out.sink.write(item)
                        token = time.perf_counter() - clock
                    except BaseException as exc:  # noqa: BLE001 - carried to the caller
                        failed = True
                        token = Failure.capture(exc, "sinks")
                out.done.put(token)
        finally:
            try:
                out.sink.close()
            except BaseException as exc:  # noqa: BLE001 - carried to the caller
                out.done.put(Failure.capture(exc, "sinks"))
            out.done.put(_CLOSED)  # always the last answer, failed or not: the sinks thread waits for it

    def _sink_loop(self, inbox: queue.Queue, by_source: dict[str, list[_Output]], shared: list[_Output],
                   board: StatsBoard, drop: threading.Event) -> None:
        """Hands each result to its outputs, whose threads write it side by side, and passes it on to the
        caller, in order, once all of them have; up to ``queue_size`` results are being written at once."""
        final: Any = None
        interval = self.config.live.stats_interval_s
        any_live = any(self.live.values())
        next_log = time.monotonic() + interval
        next_publish = 0.0
        pending: collections.deque[_Pending] = collections.deque()
        try:
            while not self._abort.is_set():
                self._drain_events(board)
                now = time.monotonic()
                if self.web is not None and now >= next_publish:
                    self.web.publish_stats(board.snapshot())
                    next_publish = now + 1.0
                if any_live and interval > 0 and now >= next_log:
                    stats_log.info("%s", StatsBoard.format(board.snapshot()))
                    next_log = now + interval
                item = None
                if len(pending) < self.config.batching.queue_size:
                    try:  # while results are being written, look for the next without waiting
                        item = inbox.get(timeout=0 if pending else POLL_S)
                    except queue.Empty:
                        pass
                if isinstance(item, (EndOfStream, Failure)):
                    final = item
                    break
                if item is not None:
                    targets = [*by_source.get(item.source, ()), *shared]
                    for out in targets:
                        put(out.inbox, item, self._abort)
                    pending.append(_Pending(item, targets))
                # Pass on what all outputs have written, in order: waiting for the oldest only when
                # nothing new came in, so that a result never waits behind later ones.
                final = self._pass_on(pending, board, wait=item is None)
                if isinstance(final, Failure):
                    break
            while pending and not isinstance(final, Failure) and not self._abort.is_set():
                final = self._pass_on(pending, board, wait=True) or final
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            final = Failure.capture(exc, "sinks")
        if isinstance(final, Failure):
            self._stop.set()
            drop.set()
        outputs = [*shared, *(out for group in by_source.values() for out in group)]
        for out in outputs:  # finish every output; a file's last frames are in before the caller hears the end
            put(out.inbox, EndOfStream(), self._abort)
        for out in outputs:
            while (token := get(out.done, self._abort)) is not None and token is not _CLOSED:
                if isinstance(token, Failure) and not isinstance(final, Failure):
                    final = token
                    drop.set()
        self._drain_events(board)
        if not isinstance(final, Failure):
            board.finish()
            final = EndOfStream(stats=tuple(board.snapshot()))
        while True:
            try:
                self._results.put(final, timeout=POLL_S)
                return
            except queue.Full:
                if self._abort.is_set():
                    return

    def _pass_on(self, pending: collections.deque[_Pending], board: StatsBoard, *, wait: bool) -> Failure | None:
        """Hand the caller the oldest pending results that every output has written (waiting for the
        first of them with ``wait``); a Failure if an output failed."""
        while pending:
            entry = pending[0]
            while entry.waiting:  # each output answers its results in order, so its next answer is this one's
                out = entry.waiting[0]
                try:
                    token = get(out.done, self._abort) if wait else out.done.get_nowait()
                except queue.Empty:
                    return None
                if token is None:  # aborted
                    return None
                if isinstance(token, Failure):
                    return token
                if token is not _SKIPPED:
                    stage = _stage(out.sink)
                    entry.item.stats[stage] = entry.item.stats.get(stage, 0.0) + token
                entry.waiting.pop(0)
            pending.popleft()
            board.add(entry.item)
            put(self._results, entry.item, self._abort)
            wait = False
        return None

    def _drain_events(self, board: StatsBoard) -> None:
        while True:
            try:
                board.status(self._events.get_nowait())
            except queue.Empty:
                return

    # -- consuming -----------------------------------------------------------------------------

    def results(self) -> Iterator[FrameResult]:
        """Yield results in order (per source) as they are ready, until every source has ended.

        Raises:
            StreamsegError: (or whatever a stage raised) when a stage fails; the run is stopped.
        """
        while True:
            item = self._next()
            if item is None:
                return
            yield item

    def _next(self) -> FrameResult | None:
        if self._state is not State.RUNNING:
            raise RuntimeError("start the pipeline (or enter its context) before reading results")
        while not self._finished:
            if self._deadline is not None and time.monotonic() >= self._deadline and not self._timed_out:
                self._timed_out = True
                self.stop()
            try:
                item = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if not any(t.is_alive() for t in self._threads):
                    self._finished = True
                continue
            if isinstance(item, EndOfStream):
                self._finished = True
                self.final_stats = list(item.stats)
            elif isinstance(item, Failure):
                self._finished = True
                self.abort()  # nothing more is read: the stages still passing results on end without them
                log.debug("%s failed:\n%s", item.stage, item.trace)
                raise item.error
            else:
                return item
        return None

    def run(self, on_result: Callable[[FrameResult], None] | None = None,
            handle_interrupt: bool = True, on_started: Callable[[], None] | None = None) -> RunSummary:
        """Run the job to its end and return a summary; start it first where it is new, then call
        ``on_started``.

        On the main thread, the first Ctrl-C stops gracefully (outputs are finished and play), the
        second aborts and raises :class:`Aborted` (a KeyboardInterrupt) once the outputs are closed.
        SIGTERM (systemd, ``docker stop``) and SIGHUP (the terminal closed) count as Ctrl-C, from the start
        on: one that comes while a source is still being opened (a named pipe waiting for its writer) ends
        the run as well.
        """
        summary = RunSummary(outputs=self.outputs)
        started = time.monotonic()
        presses, last_signal = 0, signal.SIGINT

        def on_signal(signum: int, frame: Any) -> None:
            nonlocal presses, last_signal
            presses += 1
            last_signal = signum
            if presses == 1:
                summary.signal = signum
                log.warning("stopping: finishing the outputs (%s again to abort)",
                            "press Ctrl-C" if signum == signal.SIGINT else f"send {signal.Signals(signum).name}")
                self.stop()
            else:
                self.abort()

        previous: dict[int, Any] = {}
        if handle_interrupt and threading.current_thread() is threading.main_thread():
            # A signal the process was started ignoring stays ignored: under nohup a hangup must not end the run.
            previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS
                        if signal.getsignal(signum) is not signal.SIG_IGN}
        try:
            if self._state is State.NEW:
                try:
                    self.start()
                except StreamsegError:
                    if summary.signal is None:
                        raise
                    # Stopped while opening: what failed is the signal's doing, not the source's.
            if on_started is not None and self._state is State.RUNNING:
                on_started()
            started = time.monotonic()  # the run's time, as its fps, counts from its first frame's start
            for result in self.results() if self._state is State.RUNNING else ():
                summary.frames += 1
                if on_result is not None:
                    on_result(result)
        finally:
            summary.seconds = time.monotonic() - started
            try:
                self.close()
            finally:  # only now: a second signal while the outputs close aborts, not kills, the run
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        summary.outputs = self.outputs + ([self.web.address] if self.web is not None else [])
        summary.sources = self.final_stats
        if presses > 1:
            raise Aborted(last_signal)
        if self._timed_out and summary.frames == 0:
            # A camera down or a wrong URL is not a run that succeeded with nothing to show.
            why = "; ".join(f"{s['source']}: {s.get('trouble') or 'no frame yet'}" for s in self.final_stats
                            if s["live"] and not s["frames"])
            raise SourceError(f"no frame in {self.config.duration:g} s ({why})")
        return summary
