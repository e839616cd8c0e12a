"""Command line: ``streamseg segment SOURCE -o OUTPUT [options]``, a thin layer over :class:`Pipeline`."""

from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .config import DEFAULT_MODEL, Config, load_config
from .exceptions import Aborted, ConfigError, ModelError, SinkError, SourceError, StreamsegError
from .urls import redact_text

if TYPE_CHECKING:
    from .inference.loading import LoadedModel
    from .jobs import Outcome
    from .runtime.pipeline import RunSummary
    from .types import FrameResult

__all__ = ["main"]

EXIT_CODES = {ConfigError: 2, SourceError: 3, ModelError: 4, SinkError: 5}
EXIT_INTERRUPTED = 130
EXIT_SOME_FAILED = 6  # a job over many videos in which some failed (and were skipped)

log = logging.getLogger("streamseg")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is the error and a one-line hint, as git and click print it, not the whole
    usage (23 lines) above the one line that matters."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\nusage: {self.prog} ... (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamseg", description="Mask2Former segmentation over video.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    seg = sub.add_parser(
        "segment", help="segment a video file into an annotated video and/or per-frame masks",
        description="Segment a video: decode, run Mask2Former, draw the masks, write the outputs. "
                    "Flags override values from --config.",
    )
    seg.add_argument("sources", nargs="*", metavar="SOURCE",
                     help="video file, webcam index (0) or device, stream URL (rtsp://, rtmp://, http(s)://), "
                          "or - for a video piped in; several run at once")
    seg.add_argument("--sources-file", metavar="FILE", help="more sources, one per line (# starts a comment)")
    seg.add_argument("-o", "--output", help="annotated video to write; the suffix picks the container "
                                            "(.mp4, .mkv, .mov, .webm); with several sources, one file each "
                                            "(out-<source>.mp4)")
    seg.add_argument("--save-masks", metavar="PATH.jsonl", help="write per-frame masks as JSON lines (COCO RLE)")
    seg.add_argument("--save-tracks", metavar="PATH.txt", help="write the tracked things in the MOTS text format "
                     "(frame track_id class_id height width rle), which TrackEval reads")
    seg.add_argument("--save-labels", metavar="DIR", help="write per-frame label maps into DIR as lossless PNG, each "
                     "with a JSON of its segments (semantic: 16-bit class ids; panoptic: COCO's RGB id encoding; "
                     "instance: 16-bit instance values)")
    seg.add_argument("--save-coco", metavar="FILE.json", help="write COCO results (instance, semantic; image_id is "
                     "the frame's number) or COCO's panoptic format (panoptic: FILE.json and a FILE/ folder of PNGs)")
    seg.add_argument("--config", metavar="FILE.yaml", help="YAML config (see configs/)")
    seg.add_argument("--model", help=f"hub id or local folder of a Mask2Former checkpoint (default {DEFAULT_MODEL})")
    seg.add_argument("--task", choices=("auto", "semantic", "instance", "panoptic"),
                     help="what to segment; auto reads the checkpoint name, else panoptic")
    seg.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    seg.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"),
                     help="auto: float32 on CPU, float16 on CUDA")
    seg.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    seg.add_argument("--no-cuda-graphs", action="store_true", default=None,
                     help="on CUDA, launch the model's kernels one by one instead of replaying a CUDA graph")
    seg.add_argument("--channels-last", action="store_true", default=None,
                     help="channels-last memory layout for the model (faster convolutions on some devices)")
    seg.add_argument("--threshold", type=float, help="minimum segment score (default 0.5)")
    seg.add_argument("--mask-threshold", type=float, help="panoptic: weighted-probability threshold (default 0.5)")
    seg.add_argument("--overlap-threshold", type=float,
                     help="panoptic: minimum kept share of a segment's own mask (default 0.8)")
    seg.add_argument("--classes", nargs="+", metavar="NAME|ID", help="keep only segments of these classes (names or "
                     "label ids) in every output")
    seg.add_argument("--start", type=float, metavar="SECONDS", help="files: segment from this time on (seeks there)")
    seg.add_argument("--end", type=float, metavar="SECONDS", help="files: segment up to this time")
    seg.add_argument("--vid-stride", type=int, metavar="N", help="segment every Nth frame of each source "
                     "(frames keep their numbers and times; default 1)")
    seg.add_argument("--max-fps", type=float, metavar="F", help="segment at most F frames a second of each source "
                     "(files and live sources alike)")
    seg.add_argument("--batch-size", type=int, help="frames per forward pass (default 4)")
    seg.add_argument("--max-wait-ms", type=float, help="longest wait to fill a batch (default 20)")
    seg.add_argument("--opacity", type=float, help="mask opacity, 0 to 1 (default 0.5)")
    seg.add_argument("--no-labels", action="store_true", default=None, help="do not write class names")
    seg.add_argument("--no-outlines", action="store_true", default=None, help="do not outline segments")
    seg.add_argument("--show-scores", action="store_true", default=None, help="add each segment's score to its label")
    seg.add_argument("--boxes", action="store_true", default=None, help="draw each segment's bounding box")
    seg.add_argument("--line-width", type=int, metavar="PIXELS", help="outlines' and boxes' width (default: 1 per "
                     "360 rows of the frame)")
    seg.add_argument("--color-by", choices=("auto", "class", "instance", "track"),
                     help="colour segments by class, give each segment of a frame its own shade, or colour things "
                          "by track (auto: by track where tracking runs, else by class)")
    track = seg.add_argument_group("tracking (instance and panoptic things; see README)")
    track.add_argument("--no-track", action="store_true", default=None,
                       help="segment each frame alone: no track ids, colours by class")
    track.add_argument("--track-buffer", type=float, metavar="SECONDS",
                       help="how long a lost track waits to be found again (occlusions, dropped frames; default 2)")
    track.add_argument("--track-min-hits", type=int, metavar="N",
                       help="frames in a row before a new object is confirmed and numbered (default 3)")
    track.add_argument("--track-similarity", type=float, metavar="S",
                       help="least embedding cosine to re-identify an object with no overlap (default 0.75)")
    seg.add_argument("--no-audio", action="store_true", default=None, help="do not copy the source's audio")
    seg.add_argument("--codec", help="video encoder: auto (VP9 for .webm; else NVENC on an NVIDIA GPU when it opens, "
                                     "else libx264), libx264, h264_nvenc, hevc, vp9, av1, ... (default auto)")
    seg.add_argument("--decoder", help="decoding of files and streams: auto (NVDEC when the model runs on an "
                                       "NVIDIA GPU and it opens, else the CPU), cpu, cuda or cuda:N (default auto)")
    seg.add_argument("--gpu-frames", action="store_true", default=None,
                     help="files decoded by NVDEC keep their frames on the GPU, with no copy through the host "
                          "(experimental)")
    seg.add_argument("--color-conversion", choices=("auto", "device", "host"),
                     help="where decoded YUV becomes RGB: auto (on the GPU when the model runs on one, else on the "
                          "host), device or host (default auto)")
    seg.add_argument("--crf", type=int, help="quality, 0-51, lower is better (default 20); x264's scale, mapped onto "
                                     "VP9's and AV1's 0-63")
    seg.add_argument("--preset", help="x264 speed preset, also mapped onto VP9's speeds (default veryfast; "
                                      "ultrafast: a third of the CPU, larger files, for a GPU without NVENC)")
    live = seg.add_argument_group("live sources")
    live.add_argument("--show", action="store_true", default=None, help="a window per source (q quits)")
    live.add_argument("--serve", metavar="[HOST:]PORT",
                      help="web page with each source's annotated stream and stats (host 127.0.0.1 by default; "
                           "[::]:PORT for IPv6)")
    live.add_argument("--serve-token", metavar="TOKEN",
                      help="asked of every request to the page (?token= or Authorization: Bearer); made up and "
                           "printed once when --serve listens beyond this machine")
    live.add_argument("--stream", metavar="URL",
                      help="publish the annotated video live to a media server: rtsp://, rtmp://, srt://, udp://; "
                           "{source} in the URL is each source's name (files are sent at their own speed)")
    live.add_argument("--segment-time", type=float, metavar="SECONDS",
                      help="split live recordings (and masks) into files of this length")
    live.add_argument("--keep-segments", type=int, metavar="N",
                      help="with --segment-time, keep each source's newest N files and delete older ones")
    live.add_argument("--duration", type=float, metavar="SECONDS", help="end the run after this long")
    live.add_argument("--rtsp-transport", choices=("tcp", "udp"), help="RTSP transport (default tcp)")
    live.add_argument("--stall-timeout", type=float, metavar="SECONDS",
                      help="reconnect when no frame arrives for this long (default 5)")
    live.add_argument("--stats-interval", type=float, metavar="SECONDS",
                      help="print per-source stats this often (default 10; 0: only at exit)")
    ray = seg.add_argument_group("cluster (many videos on Ray workers; pip install 'streamseg[ray]')")
    ray.add_argument("--cluster", metavar="ADDRESS",
                     help="run the inputs (with -o OUTDIR/) on Ray workers: local (start Ray on this machine), "
                          "auto, or a cluster's address (host:6379, ray://host:10001); outputs must be on a "
                          "path every node sees")
    ray.add_argument("--workers", type=int, metavar="N", help="how many workers (default: as many as fit)")
    ray.add_argument("--worker-cpus", type=int, metavar="N", help="CPUs each worker takes (default 1)")
    ray.add_argument("--chunk-seconds", type=float, metavar="S",
                     help="cut each long file at keyframes into parts of about S seconds, run on several workers "
                          "and joined without re-encoding (timestamps, sound and masks as one run gives them)")
    seg.add_argument("--no-progress", action="store_true", help="no progress line")
    seg.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def build_config(args: argparse.Namespace) -> Config:
    """Merge the flags given over the config file's values (or the defaults)."""
    def flag_off(value: Any) -> bool | None:
        return None if value is None else not value

    sources = list(args.sources)
    if args.sources_file:
        try:
            lines = Path(args.sources_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read sources file {args.sources_file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"sources file {args.sources_file} is not UTF-8 text (byte {exc.start + 1})") from None
        sources += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    return load_config(
        args.config,
        sources=tuple(sources) or None,
        model__name=args.model,
        model__task=args.task,
        model__device=args.device,
        model__dtype=args.dtype,
        model__compile=args.compile,
        model__channels_last=args.channels_last,
        model__cuda_graphs=flag_off(args.no_cuda_graphs),
        postprocess__threshold=args.threshold,
        postprocess__mask_threshold=args.mask_threshold,
        postprocess__overlap_threshold=args.overlap_threshold,
        postprocess__classes=tuple(args.classes) if args.classes else None,
        batching__batch_size=args.batch_size,
        batching__max_wait_ms=args.max_wait_ms,
        render__opacity=args.opacity,
        render__labels=flag_off(args.no_labels),
        render__outlines=flag_off(args.no_outlines),
        render__color_by=args.color_by,
        render__show_scores=args.show_scores,
        render__boxes=args.boxes,
        render__line_width=args.line_width,
        tracking__enabled=flag_off(args.no_track),
        tracking__buffer_s=args.track_buffer,
        tracking__min_hits=args.track_min_hits,
        tracking__reid_similarity=args.track_similarity,
        output__video=args.output,
        output__masks=args.save_masks,
        output__tracks=args.save_tracks,
        output__labels=args.save_labels,
        output__coco=args.save_coco,
        output__audio=flag_off(args.no_audio),
        output__codec=args.codec,
        output__crf=args.crf,
        output__preset=args.preset,
        output__show=args.show,
        output__serve=args.serve,
        output__serve_token=args.serve_token,
        output__stream=args.stream,
        output__segment_time=args.segment_time,
        output__keep_segments=args.keep_segments,
        duration=args.duration,
        start=args.start,
        end=args.end,
        vid_stride=args.vid_stride,
        max_fps=args.max_fps,
        decoder=args.decoder,
        gpu_frames=args.gpu_frames,
        color_conversion=args.color_conversion,
        live__transport=args.rtsp_transport,
        live__stall_timeout_s=args.stall_timeout,
        live__stats_interval_s=args.stats_interval,
        cluster__address=args.cluster,
        cluster__workers=args.workers,
        cluster__worker_cpus=args.worker_cpus,
        cluster__chunk_seconds=args.chunk_seconds,
    )


class Progress:
    """A progress bar on a terminal (tqdm: frames, a smoothed rate, an ETA once the length is known); silent
    elsewhere. A terminal that goes away (a dropped ssh session) silences it; the run goes on."""

    def __init__(self, total: int | None, stream: Any = sys.stderr, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.count = 0
        self._bar: Any = None

    def start(self, total: int | None = None) -> None:
        """Show the bar, from the run's first frame on (model loading is not counted in its rate)."""
        self.total = total if total is not None else self.total
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="frame", file=self.stream, smoothing=0.1, dynamic_ncols=True,
                             mininterval=0.2)

    def __call__(self, result: FrameResult) -> None:
        self.count += 1
        if self._bar is not None:
            self._quietly(self._bar.update, 1)

    def finish(self) -> None:
        if self._bar is not None:
            self._quietly(self._bar.close)
            self._bar = None

    def _quietly(self, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except OSError:  # the terminal is gone (SIGHUP after a dropped ssh session): the run goes on
            self._bar = None


def _tell(text: str) -> None:
    """A line for the user on stderr, if there is still somewhere to write it: after a hangup (the ssh
    session dropped) the terminal is gone, and the outputs, finished by then, matter more than the line."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def _segment(args: argparse.Namespace) -> int:
    # Imported here, not at the top: torch takes seconds to import, which --help and bad flags need not
    # wait for, and a Ctrl-C during the import ends with "aborted" like any other. OpenCV comes before PyAV:
    # with PyAV's FFmpeg libraries loaded first, a --show window hung in its first imshow.
    import cv2  # noqa: F401

    from .runtime.stats import StatsBoard

    config = build_config(args)
    if config.cluster.address:
        from .cluster.connect import ray_module

        ray_module()  # installed, or said at once how to install it
    out = config.output
    if not config.sources:
        raise ConfigError("no source: give a video file, webcam index or stream URL")
    if not (out.video or out.masks or out.tracks or out.labels or out.coco or out.show or out.serve or out.stream):
        raise ConfigError("nothing to do: give -o OUTPUT, --save-masks PATH, --save-tracks PATH, --save-labels DIR, "
                          "--save-coco FILE, --stream URL, --show or --serve PORT")
    from .jobs import many_videos
    from .sources.base import classify

    if (inputs := many_videos(config)) is not None:
        return (_segment_on_cluster if config.cluster.address else _segment_many)(config, inputs, args)
    if config.cluster.address:
        if not all(classify(spec).live for spec in config.sources):
            raise ConfigError("cluster.address: --cluster runs many video files (files, a folder, a glob or a "
                              "list, with -o OUTDIR/) or cameras and streams, not one file or images")
        return _watch_on_cluster(config)
    summary, live = _run(config, args)
    if live and summary.sources:
        _tell(StatsBoard.format(summary.sources))
    state = "stopped early" if summary.interrupted else "done"
    written = [o for o in summary.outputs if "://" in o or glob.glob(glob.escape(o).replace("[*]", "*"))]
    _tell(f"{state}: {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps) -> "
          f"{', '.join(written) or 'no file'}")
    return 128 + summary.signal if summary.signal is not None else 0  # the shell's code for a signal


def _run(config: Config, args: argparse.Namespace, model: LoadedModel | None = None) -> tuple[RunSummary, bool]:
    """One pipeline over ``config`` (with ``model`` where it is loaded already), with a progress bar; its
    summary, and whether a source was live."""
    from .runtime.pipeline import Pipeline

    pipeline = Pipeline(config, model=model)
    live = any(pipeline.live.values())
    if live:
        logging.getLogger("streamseg.stats").setLevel(logging.INFO)
    progress = Progress(None, enabled=not args.no_progress)

    def started() -> None:
        if pipeline.web is not None:
            _tell(f"live preview on {pipeline.web.url}")  # with its token: said this once
        single = len(pipeline.names) == 1 and pipeline.infos
        progress.start(next(iter(pipeline.infos.values())).frames if single else None)

    try:
        return pipeline.run(on_result=progress, on_started=started), live
    finally:
        pipeline.close()
        progress.finish()


def _segment_many(config: Config, inputs: list[str], args: argparse.Namespace) -> int:
    """Many videos, one after another, an output each in the folder given (see :mod:`streamseg.jobs`); the
    model is loaded once, for the first input that needs it."""
    from .inference.loading import load_model
    from .jobs import run_jobs

    models = []

    def run(one: Config) -> int:
        _tell(f"{one.sources[0]}:")
        if not models:
            models.append(load_model(one.model.name, device=one.model.device, dtype=one.model.dtype))
        summary, _ = _run(one, args, models[0])
        if summary.interrupted:  # the job ends here; this input's outputs keep their temporary names
            raise Aborted(summary.signal or signal.SIGINT)
        return summary.frames

    try:
        outcomes = run_jobs(config, inputs, run)
    except Aborted as stop:
        _tell("stopped early: the inputs before it are done; run it again to go on with the rest")
        return 128 + stop.signum
    return _job_done(config, inputs, outcomes)


def _segment_on_cluster(config: Config, inputs: list[str], args: argparse.Namespace) -> int:
    """Many videos on Ray workers (see :mod:`streamseg.cluster`), with the driver's progress lines."""
    from .cluster import run_on_cluster
    from .cluster.progress import ProgressLines

    def said(outcome: Outcome, worker: str) -> None:
        if outcome.error:
            _tell(f"{outcome.input}: failed on {worker} ({outcome.error})")
        else:
            _tell(f"{outcome.input}: {outcome.frames} frames in {outcome.seconds:.1f} s ({outcome.fps:.1f} fps) "
                  f"on {worker}")

    lines = ProgressLines(config.live.stats_interval_s or 10.0)
    try:
        outcomes = run_on_cluster(config, inputs, lines if not args.no_progress else lambda view: None, said)
    except KeyboardInterrupt:
        _tell("stopped early: the inputs finished are done; run it again to go on with the rest")
        raise
    return _job_done(config, inputs, outcomes)


def _watch_on_cluster(config: Config) -> int:
    """Cameras spread over Ray workers (see :mod:`streamseg.cluster.cameras`), every camera's statistics
    printed with its worker; Ctrl-C ends every recording cleanly."""
    from .cluster.cameras import watch_on_cluster
    from .runtime.stats import StatsBoard

    def board(stats: list[dict]) -> str:
        return "\n".join(f"{StatsBoard.format([s])} [on {s['worker']}]" for s in stats)

    started = time.monotonic()
    try:
        final = watch_on_cluster(config, lambda stats: stats and _tell(board(stats)),
                                 lambda page: _tell(f"live preview on {page.url}"))  # with its token: said once
    except KeyboardInterrupt:
        _tell("stopped: the recordings are finished")
        raise
    _tell(board(final))
    frames = sum(s["frames"] for s in final)
    _tell(f"done: {frames} frames from {len(config.sources)} sources in {time.monotonic() - started:.1f} s")
    return 0


def _job_done(config: Config, inputs: list[str], outcomes: list[Outcome]) -> int:
    """The last line of a job over many videos, and its exit code."""
    failed = [o for o in outcomes if o.error]  # each said as it failed, and in the manifest
    skipped = sum(o.skipped for o in outcomes)
    _tell(f"done: {len(outcomes) - len(failed)} of {len(inputs)} inputs ({skipped} done before, {len(failed)} "
          f"failed), {sum(o.frames for o in outcomes)} frames -> {config.output.video}")
    return EXIT_SOME_FAILED if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamseg`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, handlers=[handler])
    try:
        if not args.debug:
            _quiet_libraries(downloads=not args.no_progress and sys.stderr.isatty())
        return _segment(args)
    except StreamsegError as exc:
        if args.debug:
            _tell(redact_text("".join(traceback.format_exception(exc))).rstrip())
        else:
            _tell(f"error: {redact_text(str(exc))}")
        return next((code for cls, code in EXIT_CODES.items() if isinstance(exc, cls)), 1)
    except KeyboardInterrupt as exc:  # a second signal (Aborted), or Ctrl-C before the run began
        _tell("aborted")
        return 128 + exc.signum if isinstance(exc, Aborted) else EXIT_INTERRUPTED
    except Exception as exc:  # a bug: its traceback, which may quote a URL, without credentials
        _tell(redact_text("".join(traceback.format_exception(exc))).rstrip())
        return 1


class _RedactingFormatter(logging.Formatter):
    """Log lines, and the tracebacks they carry, with every URL's credentials hidden: a library's message
    or a chained PyAV error can quote a URL whole."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def entry() -> NoReturn:
    """The ``streamseg`` command: :func:`main`, then exit with its code.

    A run stopped by Ctrl-C (or SIGTERM, SIGHUP) has closed its outputs by then, and its process ends
    at once, without the interpreter's teardown: after an abort, that teardown can race library threads
    still winding down (seen once in a loaded test run: the C++ runtime aborting, exit -6 instead of 130).
    """
    code = main()
    if code > 128:  # stopped by a signal
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _quiet_libraries(downloads: bool = False) -> None:
    """Hide library chatter (retries, warnings, bars) that would bury our one-line messages; with
    ``downloads``, keep the hub's download bars: a model's first download takes minutes that should show."""
    for name in ("transformers", "huggingface_hub", "libav"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # SVT-AV1 (--codec libsvtav1) prints a 20-line banner per encoder straight to stderr, outside
    # FFmpeg's log; its errors only, read when an encoder opens.
    os.environ.setdefault("SVT_LOG", "1")
    try:
        # Each library sets its own level when imported, over what was set above.
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging as hf_logging

        hub_logging.set_verbosity_error()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # transformers' own bars, and the hub's with them
        if downloads:
            from huggingface_hub.utils import enable_progress_bars

            enable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    sys.exit(main())
