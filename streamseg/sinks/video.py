"""Annotated video out, encoded with PyAV, keeping the source's timestamps and audio."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from ..audio import AudioFeed
from ..containers import CONTAINERS
from ..demuxing import Damage, Timeline, packets
from ..exceptions import ConfigError, SinkError
from ..types import FrameResult
from .base import Sink
from ..urls import redact, scrub

__all__ = ["VideoSink", "check_encoder", "check_writable", "encoder_opens", "encoder_threads", "pick_encoder"]

log = logging.getLogger(__name__)

DEFAULT_RATE = Fraction(30, 1)
# How RGB becomes YUV here: swscale's default matrix, BT.601, in limited range. The file says so
# (AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG); untagged, players take HD video for BT.709 and shift its colours.
COLORSPACE_BT601 = 6
RANGE_LIMITED = 1
_END = object()  # an audio iterator gave its last packet


# Options that keep an encoder from printing its banner on stderr at every open (x265: 20 lines).
_QUIET = {"libx265": {"x265-params": "log-level=error"}}


_REAL_TIME = {getattr(os, "SCHED_FIFO", -1), getattr(os, "SCHED_RR", -1)}
# How the run was scheduled when it started: what an encoder that changes it is undone to.
_SCHEDULING = (os.sched_getscheduler(0), os.sched_getparam(0)) if hasattr(os, "sched_getscheduler") else None


@contextlib.contextmanager
def _scheduling_kept():
    """Open an encoder without letting it make the run real-time.

    SVT-AV1, run as root (as in most containers), puts the thread that opens it, and every thread it
    starts, in SCHED_FIFO at priority 99, and leaves them there: every thread the run starts afterwards
    inherits it, and busy real-time threads starve the rest of the machine (a 2-core machine froze).
    So once an encoder is open, every real-time thread is put back as the run started, unless it started
    real-time (``chrt``), which is the user's choice."""
    try:
        yield
    finally:
        if _SCHEDULING is not None and _SCHEDULING[0] not in _REAL_TIME:
            for tid in real_time_threads():
                with contextlib.suppress(OSError):  # a thread that just ended
                    os.sched_setscheduler(tid, *_SCHEDULING)


def real_time_threads() -> list[int]:
    """The ids of this process's threads in a real-time scheduling class (none where there is no such
    thing to ask about: not Linux)."""
    found = []
    for tid in os.listdir("/proc/self/task") if _SCHEDULING is not None else []:
        with contextlib.suppress(OSError):  # a thread that just ended
            if os.sched_getscheduler(int(tid)) in _REAL_TIME:
                found.append(int(tid))
    return found


@functools.cache
def encoder_opens(name: str) -> bool:
    """Whether an encoder exists and opens here (a hardware encoder needs its device and driver)."""
    if name not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 256, 256, "yuv420p", Fraction(1, 30)
        ctx.options = dict(_QUIET.get(ctx.codec.name, {}))
        with _scheduling_kept():
            ctx.open()
        return True
    except (av.FFmpegError, ValueError, OSError, AttributeError):  # AttributeError: not a video encoder
        return False


def check_encoder(name: str, path: str | Path | None = None) -> None:
    """Fail early, before any work, when a named video encoder is unknown or does not open here, or when
    the container of ``path`` cannot hold its video (FFmpeg says so only when the file is finished).

    Raises:
        ConfigError: with what to do instead.
    """
    try:
        codec = av.Codec(name, "w")
    except (av.FFmpegError, ValueError) as exc:  # UnknownCodecError is a ValueError in some PyAV versions
        raise ConfigError(f"output.codec: {name!r} is not a video encoder FFmpeg has here "
                          "(libx264, h264_nvenc, libvpx-vp9, libsvtav1, ...)") from exc
    if codec.type != "video":
        raise ConfigError(f"output.codec: {name!r} encodes {codec.type}, not video")
    if not encoder_opens(name):
        raise ConfigError(f"output.codec: {name!r} does not open on this machine (a hardware encoder needs its "
                          "device and driver); use --codec auto or libx264")
    suffix = Path(path).suffix.lower() if path else ""
    if suffix in CONTAINERS and not _muxer_takes(CONTAINERS[suffix], codec.name):
        raise ConfigError(f"output.codec: {codec.canonical_name} video cannot be stored in a {suffix} file; "
                          f"use {' or '.join(s for s in CONTAINERS if _muxer_takes(CONTAINERS[s], codec.name))}")


@functools.cache
def _muxer_takes(muxer: str, encoder: str) -> bool:
    """Whether FFmpeg's ``muxer`` starts a file with ``encoder``'s video (MOV refuses VP9 and AV1)."""
    try:
        with _scheduling_kept(), av.open(io.BytesIO(), "w", format=muxer) as out:
            stream = out.add_stream(encoder, rate=30, options=dict(_QUIET.get(encoder, {})))
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            out.start_encoding()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


# AAC in MPEG-TS (ADTS) describes itself in a header on every packet; RTP (RTSP's) and fragmented MP4 (files,
# written so that a crash keeps them: see _CRASH_SAFE) need that description once, up front, and the packets
# bare. Other muxers convert by themselves.
_CONFIG_UP_FRONT = ("rtsp", "rtp", "mp4", "mov")
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_TYPES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}  # what an ADTS header can say


def _adts_config(stream: av.AudioStream) -> bytes | None:
    """The AudioSpecificConfig of ADTS AAC (as MPEG-TS carries it), which each packet's header repeats;
    None where the stream's parameters cannot say it (HE-AAC, whose header says less than the decoder)."""
    ctx = stream.codec_context
    if ctx.profile not in _AAC_TYPES or ctx.sample_rate not in _AAC_RATES or not 1 <= ctx.channels <= 6:
        return None
    config = _AAC_TYPES[ctx.profile] << 11 | _AAC_RATES.index(ctx.sample_rate) << 7 | ctx.channels << 3
    return config.to_bytes(2, "big")


def _is_adts(stream: av.AudioStream) -> bool:
    return stream.codec_context.name == "aac" and not stream.codec_context.extradata


def _takes_sound(muxer: str, stream: av.AudioStream) -> bool:
    """Whether FFmpeg's ``muxer`` holds ``stream``'s sound as it is (MP4 and Matroska take no G.711)."""
    out = av.open(io.BytesIO(), "w", format=muxer)
    try:
        out.add_stream_from_template(stream)
    except (av.FFmpegError, ValueError):
        return False
    finally:
        out.close()
    return True


def sound_copy(out: av.container.OutputContainer,
               stream: av.AudioStream) -> tuple[av.AudioStream, BitStreamFilterContext | None] | None:
    """Add a copy of ``stream`` to ``out``: the new stream, and the filter its packets go through first (ADTS
    AAC unwrapped for a muxer that takes its config up front), or None where it cannot be sent that way (its
    config unknown).

    Raises:
        av.FFmpegError, ValueError: the container does not take this codec.
    """
    bare = out.format.name in _CONFIG_UP_FRONT and _is_adts(stream)
    config = _adts_config(stream) if bare else None
    if bare and config is None:
        return None
    copy = out.add_stream_from_template(stream)
    if config is None:
        return copy, None
    copy.codec_context.extradata = config
    return copy, BitStreamFilterContext("aac_adtstoasc", stream)


def crash_safe_options(path: str | Path) -> dict[str, str]:
    """The muxer options that keep a file playable when its writer is killed (see :data:`_CRASH_SAFE`)."""
    return _CRASH_SAFE.get(CONTAINERS.get(Path(path).suffix.lower()), {})


def pick_encoder(codec: str, accelerated: bool, path: str | Path | None = None) -> str:
    """The encoder to use: a format's name (``h264``, ``hevc``, ``vp9``) is its encoder's (libx264, libx265,
    libvpx-vp9), whose quality settings apply; ``auto``: VP9 for a .webm ``path`` (WebM takes no H.264),
    else NVENC when the model runs on an NVIDIA GPU and the encoder opens, else libx264."""
    if codec != "auto":
        try:
            return av.Codec(codec, "w").name
        except (av.FFmpegError, ValueError):  # unknown: check_encoder says so
            return codec
    if path and Path(path).suffix.lower() == ".webm":
        return "libvpx-vp9"
    if accelerated and encoder_opens("h264_nvenc"):
        return "h264_nvenc"
    return "libx264"


def encoder_threads(threads: int, outputs: int, cores: int | None = None) -> int:
    """Threads for each of ``outputs`` video encoders running at once: ``threads`` when it is set (one,
    beside a model computing on the CPU); else the encoder's own choice for a single output, and a
    share of the cores for several. x264 encodes a frame per thread and picks 1.5 threads a core: sixteen
    cameras on sixteen cores would hold some 400 frames in their encoders, for no more speed."""
    if threads or outputs <= 1:
        return threads
    return max(2, (cores or os.cpu_count() or 2) // outputs)


def _encoder_input(image: np.ndarray) -> av.VideoFrame:
    """An (H, W, 3) RGB or (H * 3 / 2, W) YUV 4:2:0 image as a frame for the encoder, sharing its memory.

    A copy would be made with the interpreter lock held, in a pipeline whose threads all wait on that
    lock. FFmpeg keeps a reference to the array until it is
    done with it; the array must not change after (none does: each result's images are its own).
    """
    pixel_format = "rgb24" if image.ndim == 3 else "yuv420p"
    if pixel_format == "yuv420p" and image.shape[0] * 2 // 3 % 4:
        # PyAV 18 misplaces the V plane when the chroma planes have an odd number of rows (height 90, 270)
        return av.VideoFrame.from_ndarray(image, format=pixel_format)
    try:
        return av.VideoFrame.from_numpy_buffer(image, format=pixel_format)
    except (ValueError, AttributeError):  # rows not contiguous (a view), or PyAV before 12: copied instead
        return av.VideoFrame.from_ndarray(image, format=pixel_format)


def check_writable(path: str | Path) -> None:
    """Fail early, before any work, when an output file cannot be created.

    Raises:
        SinkError: the folder is missing or not writable, or the path is a folder.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SinkError(f"{path}: is a directory")
    if not folder.is_dir():
        raise SinkError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SinkError(f"{path}: permission denied")


class VideoSink(Sink):
    """Writes annotated frames to a video file.

    Every frame keeps its source timestamp (variable frame rate stays variable; the rate is never
    rounded). Audio streams of ``audio_from`` are copied packet by packet, up to the end of the last
    written frame, so an interrupted run still has matching sound. Odd frame sizes are padded by one
    pixel to the even size that 4:2:0 video needs. A source whose frame size changes midway (a camera
    reconfigured, joined recordings) keeps its first size: later frames are scaled to it, as FFmpeg's
    command line does, with a warning, and no frame is lost.

    Args:
        path: output file; its suffix picks the container (.mp4, .mkv, .mov).
        time_base: unit of the frames' ``pts``.
        rate: the source's average frame rate (a hint for players and the encoder's rate control).
        audio_from: a file whose audio streams to copy, the sound a source demuxes itself (a pipe's, a camera's),
            or None.
        codec: video encoder name (libx264, h264_nvenc, ...).
        crf: quality for x264-style encoders (lower is better).
        preset: libx264's or libx265's speed preset (NVENC keeps its own ``p4``): ``ultrafast`` takes a
            third of ``veryfast``'s CPU time a frame for larger files, for a GPU machine without NVENC.
        rebase: start the file's timestamps at 0 (live recordings, whose pts count from the run's start).
            Without it a file keeps its timestamps, unless they start below 0 (then it starts at 0).
        threads: encoder threads (0: the encoder's choice), each on its own frame. One when the model
            computes on the same CPU cores, so the encoder does not crowd out the forward pass.
        sample_aspect_ratio: the source's pixel shape where it is not square (anamorphic video), so the
            output shows at the source's width.
        fallback: an encoder to use when ``codec`` does not open for this file (a GPU's encoder sessions
            are limited: consumer cards open a handful at once, for many cameras).
        open_args: what else ``av.open`` needs for a ``path`` that is not a file: ``format``, ``options``
            (the protocol's), ``timeout``.
        low_latency: encode for a live viewer: no B-frames, no lookahead, a keyframe every 2 s.
        stopped: set when the run was stopped early. With it, a file that was read to its end keeps all of
            its sound, as FFmpeg's stream copy does, and one stopped early ends its sound with its last
            frame. Without it (a live recording, whose next segment takes up the sound) the sound always
            ends with the last frame.
    """

    stage = "encode"  # name of its time in FrameResult.stats
    wants_annotated = True  # the runner draws the overlay when some sink wants it
    takes_yuv = True  # and may hand it on as YUV 4:2:0 made on the device (FrameResult.drawn)

    def __init__(
        self,
        path: str | Path,
        *,
        time_base: Fraction,
        rate: Fraction | None = None,
        audio_from: str | AudioFeed | None = None,
        codec: str = "libx264",
        crf: int = 20,
        preset: str = "veryfast",
        rebase: bool = False,
        threads: int = 0,
        sample_aspect_ratio: Fraction | None = None,
        fallback: str | None = None,
        open_args: dict[str, Any] | None = None,
        low_latency: bool = False,
        stopped: threading.Event | None = None,
    ) -> None:
        self.path = str(path)
        self.name = redact(self.path)  # as messages show it: a URL without its credentials
        self.open_args = open_args or {}
        self.low_latency = low_latency
        self.stopped = stopped
        self.threads = threads
        self.sample_aspect_ratio = sample_aspect_ratio
        self.fallback = fallback
        self.rebase = rebase
        self._origin: int | None = None
        self.time_base = time_base
        self.rate = rate or DEFAULT_RATE
        self.audio_from = audio_from
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._out: av.container.OutputContainer | None = None
        self._video: av.VideoStream | None = None
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets = None
        self._audio_map: dict[int, av.stream.Stream] = {}
        self._unwrap: dict[int, BitStreamFilterContext] = {}  # ADTS headers to strip, by input stream
        self._pending_audio: av.Packet | None = None
        self._audio_refused = 0
        self._wild = 0  # frames whose timestamp was damaged
        self._last_pts: int | None = None
        self._end_time = 0.0
        self._size: tuple[int, int] | None = None
        self._scaled: set[tuple[int, int]] = set()  # other sizes met, each said once
        self._failed = False  # a write failed (a full disk): the muxer must not be fed again

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, width: int, height: int) -> None:
        even_w, even_h = width + width % 2, height + height % 2
        if (even_w, even_h) != (width, height):
            log.info("%s: padding %dx%d frames to %dx%d for 4:2:0 video", self.name, width, height, even_w, even_h)
        codecs = [self.codec] + ([self.fallback] if self.fallback and self.fallback != self.codec else [])
        open_args = self.open_args or {"options": crash_safe_options(self.path)}
        for codec in codecs:
            try:
                self._out = av.open(self.path, mode="w", **open_args)
                self._video = self._add_video(self._out, codec, even_w, even_h)
                break
            except (av.FFmpegError, ValueError) as exc:
                if self._out is not None:
                    self._out.close()
                    self._out = None
                if codec == codecs[-1]:
                    raise SinkError(f"{self.name}: cannot open for writing: {_reason(exc)}") from exc
                log.warning("%s: %s did not open (%s); encoding with %s", self.name, codec, _reason(exc), codecs[-1])
        self.codec = codec
        self._size = (width, height)
        if self.audio_from:
            self._open_audio()

    def _add_video(self, out: av.container.OutputContainer, codec: str, width: int, height: int) -> av.VideoStream:
        """The video stream, with its encoder opened now: a hardware encoder out of sessions fails here."""
        options = _quality(codec, self.crf, self.preset)
        if self.low_latency and codec.startswith("libx26"):
            options["tune"] = "zerolatency"
        stream = out.add_stream(codec, rate=self.rate, options=options)
        if self.low_latency:
            stream.codec_context.max_b_frames = 0
            stream.codec_context.gop_size = max(1, round(2 * self.rate))
        if av.Codec(codec, "w").canonical_name == "hevc" and out.format.name.split(",")[0] in ("mov", "mp4"):
            stream.codec_context.codec_tag = "hvc1"  # Apple's players refuse HEVC tagged hev1, FFmpeg's default
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = self.time_base
        stream.codec_context.thread_count = self.threads
        # PyAV asks for slice threads only, which makes libx264 encode one frame at a time across its
        # threads while the caller waits, and on a GPU machine that wait limits the pipeline. With frame
        # threads allowed, x264 encodes several frames at once and returns at once (a few frames' more
        # delay); FFmpeg's own encoders keep slice threads where they have no other kind.
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.colorspace = COLORSPACE_BT601
        stream.codec_context.color_range = RANGE_LIMITED
        if self.sample_aspect_ratio:
            stream.codec_context.sample_aspect_ratio = self.sample_aspect_ratio
        stream.time_base = self.time_base
        with _scheduling_kept():
            stream.codec_context.open()
        return stream

    def _open_audio(self) -> None:
        assert self._out is not None and self.audio_from is not None
        if isinstance(self.audio_from, AudioFeed):
            streams, fed = self.audio_from.streams, self.audio_from.available()
        else:
            try:
                self._audio_in = av.open(self.audio_from)
            except av.FFmpegError as exc:
                log.warning("%s: cannot reopen %s for its audio (%s); writing video only", self.name,
                            self.audio_from, _reason(exc))
                return
            streams, fed = tuple(self._audio_in.streams.audio), None
        for stream in streams:
            try:
                copied = sound_copy(self._out, stream)
            except (av.FFmpegError, ValueError) as exc:
                fits = [suffix for suffix, muxer in CONTAINERS.items() if _takes_sound(muxer, stream)]
                log.warning("%s: audio codec %s cannot be copied into this container (%s)%s", self.name,
                            stream.codec_context.name, _reason(exc), f"; use {' or '.join(fits)}" if fits else "")
                continue
            if copied is None:
                log.warning("%s: %s audio (%s) cannot be sent this way; sending video only", self.name,
                            stream.codec_context.name, stream.codec_context.profile)
                continue
            self._audio_map[stream.index], unwrap = copied
            if unwrap is not None:
                self._unwrap[stream.index] = unwrap
        if self._audio_map and self._audio_in is not None:
            # Damaged sound is left out, and a restarted clock moved as the video's reader moves it; that
            # reader tells of both.
            self._audio_packets = packets(self._audio_in, [self._audio_in.streams[i] for i in self._audio_map],
                                          Damage(), Timeline.of(self._audio_in))
        elif self._audio_map:
            self._audio_packets = fed
        elif self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None

    def write(self, result: FrameResult) -> None:
        """Encode one annotated frame (or the plain frame if nothing was drawn)."""
        if result.drawn is not None and result.drawn_format == "yuv420p":  # made on the device for us
            image, size = result.drawn, (result.drawn.shape[1], result.drawn.shape[0] * 2 // 3)
        else:
            image = result.annotated if result.annotated is not None else result.frame.image
            size = (image.shape[1], image.shape[0])
        if self._out is None:
            self._open(*size)
        assert self._video is not None and self._size is not None
        if size != self._size:  # the encoder's reformatter scales it to the stream's size
            if size not in self._scaled:
                self._scaled.add(size)
                log.warning("%s: frame size changed from %dx%d to %dx%d; scaling to %dx%d", self.name,
                            *self._size, *size, *self._size)
        elif image.ndim == 3 and (image.shape[0] % 2 or image.shape[1] % 2):
            image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
        pts = result.pts if result.pts is not None else self.frames_written
        if self._origin is None:
            # Frames before 0 would be hidden by an edit list in MP4 and MOV (players skip them): an MPEG-TS
            # recorded across its 33-bit clock's wrap reads so. Such a file is moved to start at 0.
            self._origin = pts if self.rebase else min(pts, 0)
        pts -= self._origin
        if self._last_pts is not None and pts - self._last_pts >= _WILD_JUMP:
            # A damaged timestamp (a bit flipped in an MPEG-TS header: hours ahead of its neighbours): MP4
            # cannot hold it, and the frames after it would all follow it. It takes the next tick instead.
            self._wild += 1
            if self._wild == 1:
                log.warning("%s: a frame %d ticks after the one before it (a damaged timestamp) follows it instead",
                            self.name, pts - self._last_pts)
            pts = self._last_pts + 1
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # encoders reject repeated timestamps
        self._last_pts = pts
        frame = _encoder_input(image)
        frame.pts, frame.time_base = pts, self.time_base
        try:
            for packet in self._video.encode(frame):
                self._out.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise self._write_failed(exc) from exc
        self.frames_written += 1
        self._end_time = float(pts * self.time_base) + float(1 / self.rate)
        self._copy_audio(until=self._end_time)

    def _copy_audio(self, until: float) -> None:
        if self._audio_packets is None:
            return
        assert self._out is not None
        while True:
            packet = self._pending_audio or next(self._audio_packets, _END)
            self._pending_audio = None
            if packet is _END:
                self._audio_packets = None
                return
            if packet is None:  # a source's own feed, which has not read further yet
                return
            if packet.dts is None or packet.stream_index not in self._audio_map:  # end-of-stream packet; not copied
                continue
            shift = 0
            if self._origin:  # the video was moved: its sound moves with it
                shift = round(self._origin * self.time_base / packet.time_base)
            if float((packet.dts - shift) * packet.time_base) > until:
                self._pending_audio = packet
                return
            if self.rebase and packet.dts < shift:  # sound from before this file's first frame (a stream resumed)
                continue
            packet.dts -= shift
            if packet.pts is not None:
                packet.pts -= shift
            unwrap = self._unwrap.get(packet.stream_index)
            target = self._audio_map[packet.stream_index]
            try:
                for bare in unwrap.filter(packet) if unwrap else (packet,):
                    bare.stream = target
                    self._out.mux(bare)
            except OSError as exc:  # the file itself cannot be written: no use going on
                raise self._write_failed(exc) from exc
            except av.FFmpegError as exc:  # a damaged packet: the ones after it go on
                self._audio_refused += 1
                if self._audio_refused == 1:
                    log.warning("%s: leaving out audio packets the muxer refuses (%s)", self.name, _reason(exc))

    def _write_failed(self, exc: BaseException) -> SinkError:
        """Note that the file can take no more (FFmpeg's muxer crashes when fed after a failed write)."""
        self._failed = True
        return SinkError(f"{self.name}: cannot write: {_reason(exc)}")

    def close(self) -> None:
        """Flush the encoder and finish the file so that it plays; safe to call twice.

        After a failed write only the file is closed: what is in it stays, and nothing more is tried.
        """
        if self._out is None:
            return
        try:
            if self._video is not None and not self._failed:
                for packet in self._video.encode(None):
                    self._out.mux(packet)
                whole = self.stopped is not None and not self.stopped.is_set()
                self._copy_audio(until=math.inf if whole else self._end_time)
        except (av.FFmpegError, OSError) as exc:
            self._failed = True
            raise SinkError(f"{self.name}: cannot finish the file: {_reason(exc)}") from exc
        finally:
            out, self._out = self._out, None
            if isinstance(self.audio_from, AudioFeed) and self._pending_audio is not None:
                self.audio_from.held.append(self._pending_audio)  # past this file's end: the next one's
                self._pending_audio = None
            if self._audio_in is not None:
                self._audio_in.close()
                self._audio_in = None
            try:
                out.close()
            except (av.FFmpegError, OSError) as exc:
                if not self._failed:  # else the first error is the one to tell
                    raise SinkError(f"{self.name}: cannot finish the file: {_reason(exc)}") from exc


# Files written so that a crash (SIGKILL, power loss, the OOM killer) loses at most their last second: MP4
# and MOV as fragments of at most a second, each complete once written (an ordinary moov would come only at
# the end, and without it nothing plays), Matroska in clusters of at most a second; each written out to the
# file at once, not held in FFmpeg's write buffer.
_FRAGMENTED = {"movflags": "frag_keyframe+delay_moov+default_base_moof", "frag_duration": "1000000",
               "flush_packets": "1"}
# Between two frames, a jump this many ticks or more is damage, not a gap: MP4 stores a frame's offset from
# its decoding time in 32 bits, and no recording pauses for 2**31 ticks (6.6 hours at 90 kHz) between frames.
_WILD_JUMP = 2**31

_CRASH_SAFE = {"mp4": _FRAGMENTED, "mov": _FRAGMENTED,
               "matroska": {"cluster_time_limit": "1000", "flush_packets": "1"},
               "webm": {"cluster_time_limit": "1000", "flush_packets": "1"}}

# x264's presets as libvpx's speed settings, so that a preset costs about the same time in either encoder:
# libvpx's own default (good, 1) is several times slower than x264's veryfast.
VP9_SPEED = {"ultrafast": ("realtime", 8), "superfast": ("realtime", 7), "veryfast": ("realtime", 6),
             "faster": ("good", 5), "fast": ("good", 4), "medium": ("good", 3), "slow": ("good", 2),
             "slower": ("good", 1), "veryslow": ("good", 0)}


def _quality(codec: str, crf: int, preset: str) -> dict[str, str]:
    """An encoder's options for x264's quality scale ``crf`` (0-51, lower is better) and speed ``preset``.

    VP9 and AV1 count quality from 0 to 63: ``crf`` goes to the same point of that scale. libvpx needs
    its bitrate at 0 to aim at a quality, not at FFmpeg's default bitrate.
    """
    wide = str(round(crf * 63 / 51))
    if codec.startswith("libx26"):
        return {"crf": str(crf), "preset": preset, **_QUIET.get(codec, {})}
    if codec.endswith("_nvenc"):
        return {"preset": "p4", "rc": "vbr", "cq": str(crf)}
    if codec == "libvpx-vp9":
        deadline, speed = VP9_SPEED.get(preset, ("good", 1))
        return {"crf": wide, "b": "0", "row-mt": "1", "deadline": deadline, "cpu-used": str(speed)}
    if codec in ("libsvtav1", "libaom-av1"):
        return {"crf": wide}
    return {}


def _reason(exc: BaseException) -> str:
    """Why a PyAV call failed, for a message; the error itself, chained to that message, is redacted too
    (it names a URL's credentials)."""
    scrub(exc)
    return str(getattr(exc, "strerror", None) or exc)
