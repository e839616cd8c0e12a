"""One typed configuration, loaded from YAML or built from CLI flags, validated once.

A YAML file mirrors the sections below::

    model: {name: facebook/mask2former-swin-tiny-coco-panoptic, task: panoptic}
    postprocess: {threshold: 0.5}
    batching: {batch_size: 4}

Unknown keys and ill-typed values raise :class:`ConfigError` naming the key, e.g.
``postprocess.treshold: unknown key (expected one of: threshold, mask_threshold, ...)``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .containers import CONTAINERS, IMAGE_SUFFIXES, STREAM_FORMATS, names_folder
from .exceptions import ConfigError
from .urls import redact, url_problem

__all__ = [
    "DEFAULT_MODEL",
    "Config",
    "ModelConfig",
    "PostprocessConfig",
    "BatchingConfig",
    "RenderConfig",
    "OutputConfig",
    "LiveConfig",
    "load_config",
]

DEFAULT_MODEL = "facebook/mask2former-swin-tiny-coco-panoptic"
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_WAIT_MS = 20.0
DEFAULT_QUEUE_SIZE = 8




def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _check_url(url: str, key: str) -> None:
    problem = url_problem(url)
    _check(problem is None, key, f"{redact(url)}: {problem}")


def _is_cuda(device: str) -> bool:
    name, _, index = device.partition(":")
    return name == "cuda" and (index == "" or index.isdigit())


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which checkpoint to run, where, and for which task."""

    name: str = DEFAULT_MODEL
    task: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    channels_last: bool = False  # NHWC layout for the convolutions: faster for some models on a CPU; off, as transformers has it
    cuda_graphs: bool = True  # on CUDA, replay the forward pass from CUDA graphs (not with compile)

    def __post_init__(self) -> None:
        _check(self.task in ("auto", "semantic", "instance", "panoptic"), "model.task",
               f"unknown task {self.task!r} (expected auto, semantic, instance or panoptic)")
        _check(self.dtype in ("auto", "float32", "float16", "bfloat16"), "model.dtype",
               f"unknown dtype {self.dtype!r} (expected auto, float32, float16 or bfloat16)")
        _check(self.device in ("auto", "cpu", "mps") or _is_cuda(self.device), "model.device",
               f"unknown device {self.device!r} (expected auto, cpu, mps, cuda or cuda:N)")


@dataclass(frozen=True, kw_only=True)
class PostprocessConfig:
    """Thresholds, with the defaults of transformers' post_process_* functions."""

    threshold: float = 0.5
    mask_threshold: float = 0.5
    overlap_threshold: float = 0.8
    label_ids_to_fuse: tuple[int, ...] = ()
    classes: tuple[str | int, ...] = ()  # keep only segments of these classes (names or ids); empty: all

    def __post_init__(self) -> None:
        for name in ("threshold", "mask_threshold", "overlap_threshold"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"postprocess.{name}", f"must be between 0 and 1, got {value}")


@dataclass(frozen=True, kw_only=True)
class BatchingConfig:
    """How the inference worker groups frames."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    queue_size: int = DEFAULT_QUEUE_SIZE

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batching.batch_size", f"must be at least 1, got {self.batch_size}")
        _check(self.max_wait_ms >= 0, "batching.max_wait_ms", f"must be >= 0, got {self.max_wait_ms}")
        _check(self.queue_size >= 1, "batching.queue_size", f"must be at least 1, got {self.queue_size}")


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How masks are drawn over the frames."""

    opacity: float = 0.5
    outlines: bool = True
    labels: bool = True
    color_by: str = "auto"
    show_scores: bool = False  # each label with its segment's score
    boxes: bool = False  # each segment's bounding box
    line_width: int | None = None  # outlines and boxes, in pixels; none: 1 per 360 rows of the frame

    def __post_init__(self) -> None:
        _check(0.0 <= self.opacity <= 1.0, "render.opacity", f"must be between 0 and 1, got {self.opacity}")
        if self.line_width is not None:
            _check(1 <= self.line_width <= 64, "render.line_width", f"must be 1 to 64 pixels, got {self.line_width}")
        _check(self.color_by in ("auto", "class", "instance", "track"), "render.color_by",
               f"unknown value {self.color_by!r} (expected auto, class, instance or track)")


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """How thing segments keep their identity across frames (instance and panoptic; see
    :mod:`streamseg.tracking.tracker` for the rules these tune)."""

    enabled: bool = True
    buffer_s: float = 2.0  # seconds a lost track waits to be found again (occlusions, dropped frames)
    min_hits: int = 3  # matches in a row before a new track is confirmed and numbered
    match_iou: float = 0.1  # the least mask overlap for a match by overlap
    min_similarity: float = 0.3  # the least embedding cosine for a match by overlap
    reid_similarity: float = 0.75  # the least embedding cosine for a match without overlap
    smooth_classes: bool = True  # a track's class is the one with the most score over its history
    # Label ids that are stuff (no track). Empty: a panoptic model's postprocess.label_ids_to_fuse.
    stuff: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(0 <= self.buffer_s <= 3600, "tracking.buffer_s", f"must be 0 to 3600 seconds, got {self.buffer_s}")
        _check(1 <= self.min_hits <= 100, "tracking.min_hits", f"must be 1 to 100, got {self.min_hits}")
        for name in ("match_iou", "min_similarity", "reid_similarity"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"tracking.{name}", f"must be between 0 and 1, got {value}")


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """How live sources (cameras, streams, webcams) connect, reconnect and buffer."""

    transport: str = "tcp"
    open_timeout_s: float = 5.0
    stall_timeout_s: float = 5.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    queue_size: int = 1
    stats_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _check(self.transport in ("tcp", "udp"), "live.transport", f"expected tcp or udp, got {self.transport!r}")
        for name in ("open_timeout_s", "stall_timeout_s", "reconnect_initial_s", "reconnect_max_s"):
            _check(getattr(self, name) > 0, f"live.{name}", f"must be > 0, got {getattr(self, name)}")
        _check(1 <= self.queue_size <= 4, "live.queue_size", f"keeps the newest 1 to 4 frames, got {self.queue_size}")
        _check(self.stats_interval_s >= 0, "live.stats_interval_s", "must be >= 0 (0: only at exit)")


X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Where results go.

    With several sources, ``video`` and ``masks`` name one file per source: ``out.mp4`` becomes
    ``out-<source>.mp4``; with ``segment_time`` a live source's recording and masks are split into files
    of that many seconds, named ``out-<source>-<YYYYmmdd-HHMMSS>.mp4``, of which ``keep_segments`` (if
    set) are kept per source, the oldest deleted as new ones start.
    """

    video: str | None = None
    masks: str | None = None
    tracks: str | None = None  # a MOTS text file of the tracked things (see streamseg.sinks.tracks)
    labels: str | None = None  # a folder for per-frame label maps (PNG) and their segments (JSON)
    coco: str | None = None  # a COCO file: results (instance, semantic) or the panoptic format (panoptic)
    stream: str | None = None  # a URL to publish the annotated video to, live (rtsp://, rtmp://, srt://, udp://)
    audio: bool = True
    codec: str = "auto"
    crf: int = 20
    preset: str = "veryfast"  # libx264/libx265 speed preset; NVENC keeps its own
    segment_time: float | None = None
    keep_segments: int | None = None
    show: bool = False
    serve: str | None = None
    # Asked of every request to the page; None: made up (and printed once) when serving beyond loopback.
    serve_token: str | None = None

    def __post_init__(self) -> None:
        _check(0 <= self.crf <= 51, "output.crf", f"must be between 0 and 51, got {self.crf}")
        _check(self.preset in X264_PRESETS, "output.preset",
               f"unknown preset {self.preset!r} (expected one of {', '.join(X264_PRESETS)})")
        if self.segment_time is not None:
            _check(self.segment_time >= 1, "output.segment_time", f"must be at least 1 s, got {self.segment_time}")
        if self.keep_segments is not None:
            _check(self.keep_segments >= 1, "output.keep_segments", f"must be at least 1, got {self.keep_segments}")
            _check(self.segment_time is not None, "output.keep_segments", "needs output.segment_time (--segment-time)")
        if self.serve is not None:
            host, _, port = self.serve.rpartition(":")
            _check(port.isdigit() and 0 <= int(port) < 65536, "output.serve",
                   f"expected [HOST:]PORT or [IPV6]:PORT, got {self.serve!r}")
        if self.serve_token is not None:
            _check(self.serve is not None, "output.serve_token", "needs output.serve (--serve)")
            _check(len(self.serve_token) >= 8, "output.serve_token", "must be at least 8 characters")
        if self.stream is not None:
            scheme = self.stream.split("://", 1)[0].lower() if "://" in self.stream else ""
            _check(scheme in STREAM_FORMATS, "output.stream", "expected an rtsp://, rtmp://, srt://, udp:// or tcp:// "
                   f"URL to publish to, got {scheme + '://...' if scheme else repr(self.stream)}")
            _check_url(self.stream, "output.stream")
        if self.video is not None and not names_folder(self.video):
            suffix = Path(self.video).suffix.lower()
            _check(suffix in CONTAINERS or suffix in IMAGE_SUFFIXES, "output.video",
                   f"unsupported container {suffix or '(none)'!r} for {self.video} (use {', '.join(CONTAINERS)}; "
                   f"for images {', '.join(IMAGE_SUFFIXES)}, or a folder: OUTDIR/)")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Where a job over many videos runs: this process (no address), or Ray workers (see
    :mod:`streamseg.cluster`)."""

    address: str | None = None  # local (a Ray instance started here), auto, host:port or ray://host:port
    workers: int | None = None  # None: as many as the cluster has room for
    worker_cpus: int = 1  # CPUs each worker takes (its torch threads); a worker on a GPU node takes 1 GPU too
    start_timeout_s: float = 300.0  # give up when no worker has started (loaded its model) for this long
    chunk_seconds: float | None = None  # cut long files at keyframes into parts this long, run on several workers

    def __post_init__(self) -> None:
        if self.address is not None:
            _check(bool(self.address.strip()), "cluster.address", "must be local, auto or a Ray address")
        if self.workers is not None:
            _check(1 <= self.workers <= 10000, "cluster.workers", f"must be 1 to 10000, got {self.workers}")
        _check(1 <= self.worker_cpus <= 1024, "cluster.worker_cpus", f"must be 1 to 1024, got {self.worker_cpus}")
        if self.chunk_seconds is not None:
            _check(self.chunk_seconds > 0, "cluster.chunk_seconds", f"must be > 0 seconds, got {self.chunk_seconds}")
            _check(self.address is not None, "cluster.chunk_seconds", "chunks run on a cluster: give --cluster too")
        _check(self.start_timeout_s > 0, "cluster.start_timeout_s", f"must be > 0 seconds, got {self.start_timeout_s}")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a run needs; build it with :func:`load_config` or ``Config.from_dict``."""

    sources: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    duration: float | None = None
    start: float | None = None  # files: segment from this many seconds in (seeking there, not decoding up to it)
    end: float | None = None  # files: up to this many seconds in
    vid_stride: int = 1  # segment every Nth frame of each source (its frames keep their numbers and times)
    max_fps: float | None = None  # and of those at most this many a second of the source's time
    decoder: str = "auto"  # files and streams; auto: NVDEC when the model runs on CUDA and it opens; cpu; cuda:N
    # Files decoded by NVDEC keep their frames on the GPU, without a copy through the host (experimental:
    # not yet measured on a GPU, hence off by default).
    gpu_frames: bool = False
    # Where decoded YUV becomes RGB: auto (on the model's device when it is a GPU, else by FFmpeg on the
    # host), device, or host.
    color_conversion: str = "auto"

    def __post_init__(self) -> None:
        _check(self.decoder in ("auto", "cpu") or _is_cuda(self.decoder), "decoder",
               f"unknown decoder {self.decoder!r} (expected auto, cpu, cuda or cuda:N)")
        _check(self.color_conversion in ("auto", "device", "host"), "color_conversion",
               f"unknown place {self.color_conversion!r} (expected auto, device or host)")
        _check(not self.gpu_frames or (self.decoder != "cpu" and self.color_conversion != "host"), "gpu_frames",
               "needs NVDEC's frames and the colour conversion on the GPU (not decoder: cpu or color_conversion: host)")
        if self.duration is not None:
            _check(self.duration > 0, "duration", f"must be > 0 seconds, got {self.duration}")
        _check(self.vid_stride >= 1, "vid_stride", f"must be at least 1, got {self.vid_stride}")
        if self.start is not None:
            _check(self.start >= 0, "start", f"must be 0 or more seconds, got {self.start}")
        if self.end is not None:
            _check(self.end > (self.start or 0), "end", f"must come after start, got {self.end}")
        if self.max_fps is not None:
            _check(self.max_fps > 0, "max_fps", f"must be > 0 frames a second, got {self.max_fps}")
        for source in self.sources:
            _check_url(source, "sources")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and validate a config from plain data (as YAML gives it)."""
        return _build(cls, data, "")

    def merged(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"postprocess.threshold": 0.7}``; None values are skipped."""
        data = dataclasses.asdict(self)
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return Config.from_dict(data)


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Load a YAML config file (or the defaults) and apply dotted-key overrides.

    A model folder the file names by a relative path is looked for in the working directory first,
    then beside the file, so a config that ships with its model works from any directory.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds an unknown or ill-typed key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start + 1})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
        data = _model_beside(loaded or {}, Path(path).parent)
    config = Config.from_dict(data)
    return config.merged({k.replace("__", "."): v for k, v in overrides.items()})


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's six-line report as one line: what is wrong, and where (1-based, as editors count)."""
    def where(text: str | None, mark: Any) -> str:
        return f"{text} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else text or ""

    problem = where(getattr(exc, "problem", None) or str(exc).splitlines()[0], getattr(exc, "problem_mark", None))
    context = getattr(exc, "context", None)
    return f"{where(context, getattr(exc, 'context_mark', None))}: {problem}" if context else problem


def _model_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with ``model.name`` rewritten to ``folder/name`` where only that folder exists."""
    model = data.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if not isinstance(name, str) or os.path.isabs(name) or os.path.isdir(name):
        return data
    beside = folder / name
    if not beside.is_dir():
        return data
    return {**data, "model": {**model, "name": os.path.normpath(beside)}}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key (expected one of: {', '.join(fields)})")
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint, converting only where no information is lost."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:
            return _coerce(kinds[0], value, where)
        for kind in kinds:  # a choice of plain kinds (a class by name or id): the first that fits
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
                return value
        raise ConfigError(f"{where}: expected {' or '.join(_KIND_NAMES[k] for k in kinds)}, got {value!r}")
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint} at {where}")  # a bug in this module, not user input
