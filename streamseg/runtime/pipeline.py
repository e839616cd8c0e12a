"""The pipeline: one segmentation job's lifecycle (start, results, stop, close), composed of mechanisms.

Threads, and the queues between them::

    "source:<name>" (one per source) ─┐ bounded queue each
    "source:<name>"                   ─┼─> Batcher ─> "infer" ─(1 batch)─> "post" ─> "deliver" ─> caller
                                      ─┘                                              │
                                               Outputs: "sink:<source>:<stage>", one per output

The pipeline starts every thread of its own in :meth:`Pipeline.start` and joins them in
:meth:`Pipeline.close`; :class:`~.outputs.Outputs` owns the outputs' threads, and a sink the threads it
starts itself. :meth:`Pipeline.stop` asks for a graceful end (sources stop reading, outputs finish their
files with what is done); :meth:`Pipeline.abort` makes the outputs drop what is left and close at once.
An exception in any stage stops the run and is re-raised in the caller with its original traceback.
Memory is bounded by the queue sizes, however long the run.

Files keep every frame (their producers block); live sources keep only their newest frame, so a slow
model never lets latency grow, and a stalled camera never holds the others back.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..annotators.masks import MaskAnnotator
from ..config import Config
from ..exceptions import Aborted, ConfigError, SourceError, StreamsegError
from ..inference.loading import LoadedModel, guess_task, load_model, resolve_device
from ..inference.runner import ModelRunner
from ..inference.threads import set_torch_threads, yield_to_forward
from ..sinks.base import Sink, as_sink
from ..sinks.build import SinkSet, build_sinks, check_outputs, open_sinks
from ..sinks.paths import output_tags
from ..sinks.web import WebPreviewSink
from ..sources.arrays import as_source
from ..sources.base import RunClock, Source, SourceContext, classify, is_stdin, output_stem, source_names, thinned
from ..sources.file import VideoInfo
from ..sources.hardware import decoder_problem
from ..sources.live import TROUBLE, SourceStatus
from ..sources.open import open_source
from ..sources.pipe import stdin_file
from ..tracking import tracking_for
from ..types import Frame, FrameResult
from .allocator import keep_freed_memory, release_freed_memory
from .batcher import Batcher, produce
from .channels import POLL_S, EndOfStream, Failure
from .outputs import Outputs
from .plan import RunPlan, drawing, oversized, plan
from .signals import StopSignals
from .stages import Reporting, RunEvents, deliver_loop, infer_loop, post_loop
from .stats import StatsBoard

__all__ = ["Pipeline", "RunSummary", "Sink"]

log = logging.getLogger(__name__)
stats_log = logging.getLogger("streamseg.stats")

JOIN_TIMEOUT_S = 10.0


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


def _beside_forward(target: Callable[..., None], yields: bool, *args: Any) -> None:
    """A thread's body on a CPU run, beside the forward pass's thread (see inference.threads): one torch
    thread, so that no second OpenMP team exists, and over files the lowest priority."""
    set_torch_threads(1)
    if yields:
        yield_to_forward()
    target(*args)


def thinned_frames(source: Source, stride: int, max_fps: float | None) -> Iterator[Frame]:
    """A producer's frames where the run segments only some (``--vid-stride``, ``--max-fps``)."""
    return thinned(source.frames(), stride, max_fps)


class Pipeline:
    """Runs one segmentation job; use it as a context manager.

    Example:
        >>> config = load_config("configs/sample.yaml", sources=("samples/shapes.mp4",), output__video="out.mp4")
        >>> with Pipeline(config) as pipeline:
        ...     summary = pipeline.run()

    Args:
        config: the whole job: sources, model, thresholds, batching, rendering, outputs.
        sinks: extra outputs, given every source's results; each is written from a thread of its own
            (a :class:`~streamseg.sinks.base.Sink`, or any object with ``write`` and ``close``).
        sources: extra inputs, beside ``config.sources``: each a :class:`~streamseg.sources.base.Source`, or
            frames in memory (a numpy array, PIL image or torch tensor, or a list or iterable of them, each
            a source of its own: see :class:`~streamseg.sources.arrays.ArraySource`).
        masks_to_host: copy masks to host memory for every result (the Python API wants them);
            otherwise only when an output declares it wants them.
        profile: exact per-stage timings in ``FrameResult.stats`` (syncs the device after each stage).
        annotate: draw every result (``FrameResult.annotated``), as RGB, whether an output shows it or not.
        model: a model loaded already (:func:`~streamseg.inference.loading.load_model`), for a process that
            runs many pipelines one after another (many videos, a cluster worker); else ``config.model``'s.
        part_of: the sources of a whole job of which this pipeline runs ``config.sources`` (a cluster
            worker's share of the cameras): the sources are named, and their outputs' files, as the whole
            job's would be.
    """

    def __init__(self, config: Config, *, sinks: Sequence[Any] | None = None, sources: Sequence[Any] = (),
                 masks_to_host: bool = False, profile: bool = False, annotate: bool = False,
                 model: LoadedModel | None = None, part_of: Sequence[str] = ()) -> None:
        sources = [as_source(source, f"array{k}" if len(sources) > 1 else "array") for k, source in enumerate(sources)]
        if not config.sources and not sources:
            raise ConfigError("sources: at least one source is needed")
        if sum(map(is_stdin, config.sources)) > 1:
            raise ConfigError("sources: standard input (-) can be read by one source only")
        if any(map(is_stdin, config.sources)) and (file := stdin_file()):  # `< clip.mp4`: a file after all
            config = dataclasses.replace(config, sources=tuple(file if is_stdin(s) else s for s in config.sources))
        self.config = config
        specs = [*config.sources, *(s.name for s in sources)]
        whole = [*part_of, *(s.name for s in sources)] if part_of else specs
        names = source_names(whole)  # each source's name, and what it adds to its outputs' names, in the whole job
        self._tags = output_tags({name: output_stem(name, spec) for name, spec in zip(names, whole)})
        self.names = [names[whole.index(spec)] for spec in specs]
        self._custom = {name: source for name, source in zip(self.names[len(config.sources):], sources)}
        for name, source in self._custom.items():
            source.name = name
        # Spelled out, without a connection: a playlist counts as live until start() asks it.
        self.live = {name: classify(spec).live for name, spec in zip(self.names, config.sources)}
        self.live.update({name: source.live for name, source in self._custom.items()})
        self.infos: dict[str, VideoInfo] = {}
        self.sources: list[Source] = []
        self.task = ""
        self.runner: ModelRunner | None = None
        self.plan: RunPlan | None = None
        self.outputs: list[str] = []
        self.web: WebPreviewSink | None = None
        self._extra_sinks = [as_sink(sink) for sink in sinks or ()]
        self._masks_to_host = masks_to_host
        self._profile = profile
        self._annotate = annotate
        self._model = model
        self._state = State.NEW
        self._events = RunEvents(threading.Event(), threading.Event(), threading.Event())
        self._clock = RunClock()
        self._threads: list[threading.Thread] = []
        self._outputs: Outputs | None = None
        self._results: queue.Queue = queue.Queue(maxsize=config.batching.queue_size)
        self._statuses: queue.Queue = queue.Queue(maxsize=1000)
        self._last_state: dict[str, str] = {}
        self._finished = False
        self._deadline: float | None = None
        self._timed_out = False  # the run reached config.duration
        self._caller_threads: int | None = None  # the caller's torch threads, given back by close()
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
        """Check the outputs, open the sources, load the model, open the outputs, start every thread."""
        if self._state is not State.NEW:
            raise RuntimeError(f"a pipeline runs once; this one is {self._state.value}")
        cfg = self.config
        self.check_outputs()
        if cfg.decoder not in ("auto", "cpu") and (problem := decoder_problem(cfg.decoder)):
            # As --device cuda is refused where there is no CUDA: what was asked for cannot be done.
            raise ConfigError(f"decoder: {cfg.decoder!r} requested but NVDEC cannot decode here ({problem})")
        self.sources = [open_source(spec, name, cfg) for name, spec in zip(self.names, cfg.sources)]
        self.sources += self._custom.values()
        self.live = {source.name: source.live for source in self.sources}
        self.plan = run = plan(cfg, str(resolve_device(cfg.model.device)), list(self.live.values()),
                               torch.get_num_threads())
        if run.torch_threads is not None:
            # The forward pass's thread takes every core; this thread keeps one, so that its OpenMP team
            # never exists beside the forward pass's (see inference.threads). close() gives it back.
            self._caller_threads = run.torch_threads
            set_torch_threads(1)
        self._open_sources(run)
        loaded = self._model or load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
        self.task = cfg.model.task if cfg.model.task != "auto" else guess_task(cfg.model.name, loaded.id2label)
        for name, info in self.infos.items():
            if warning := oversized(name, info.width, info.height, loaded.spec):
                log.warning("%s", warning)
        self._clock.origin = time.time()  # live frames and sound count from here
        built = build_sinks(cfg, self.sources, self._tags, accelerated=run.gpu, codec_threads=run.codec_threads,
                            stopped=self._events.stop, on_quit=self.stop)
        sinks = built.all() + self._extra_sinks
        how = drawing(run, [s.wants_annotated for s in sinks], [s.takes_yuv for s in sinks], self._annotate)
        render, tracking = cfg.render, tracking_for(cfg, self.task)
        annotator = MaskAnnotator(render.opacity, render.outlines, render.labels,
                                  render.color_by if render.color_by != "auto" else "track" if tracking else "class",
                                  scores=render.show_scores, boxes=render.boxes, line_width=render.line_width)
        masks_to_host = self._masks_to_host or any(s.wants_masks for s in sinks)
        self.runner = ModelRunner(
            loaded, self.task, cfg.postprocess, annotator=annotator if how.draw else None, tracking=tracking,
            masks_to_host=masks_to_host, compile=cfg.model.compile, profile=self._profile,
            channels_last=cfg.model.channels_last, yuv_out=how.yuv_out,
            cuda_graphs=cfg.model.cuda_graphs, batch_size=cfg.batching.batch_size,
        )
        open_sinks(sinks)  # the last step that can fail: from here on, the outputs' threads close them
        self.outputs, self.web = built.outputs, built.web
        keep_freed_memory()
        self._keeps_memory = True
        self._start_threads(built, [s for s in sinks if s.wants_stats])
        if cfg.duration is not None:
            self._deadline = time.monotonic() + cfg.duration
        self._state = State.RUNNING

    def check_outputs(self) -> None:
        """Refuse, before any work, outputs that cannot be written (the first step of :meth:`start`; a cluster's
        driver takes it before its workers start).

        Raises:
            ConfigError, SinkError: naming the output.
        """
        check_outputs(self.config, self._tags)

    def _open_sources(self, run: RunPlan) -> None:
        cfg = self.config
        context = SourceContext(stop=self._events.stop, report=self._report, clock=self._clock,
                                threads=run.codec_threads, hwaccel=run.decoder, yuv=run.yuv,
                                gpu_frames=cfg.gpu_frames,
                                audio=bool((cfg.output.video or cfg.output.stream) and cfg.output.audio),
                                wait_s=cfg.duration)
        for source in self.sources:
            source.open(context)
        self.infos = {s.name: s.info for s in self.sources if s.info is not None and not s.live}

    def _start_threads(self, built: SinkSet, watchers: list[Sink]) -> None:
        cfg, runner = self.config, self.runner
        assert runner is not None and self.plan is not None
        wakeup = threading.Event()
        queues: dict[str, queue.Queue] = {}
        for source in self.sources:
            queues[source.name] = queue.Queue(maxsize=cfg.live.queue_size if source.live else cfg.batching.queue_size)
            frames = (functools.partial(thinned_frames, source, cfg.vid_stride, cfg.max_fps)
                      if cfg.vid_stride > 1 or cfg.max_fps else source.frames)
            self._spawn(f"source:{source.name}", produce, frames, queues[source.name], self._events.stop,
                        wakeup, source.name, source.live)
        batcher = Batcher(queues, cfg.batching.batch_size, cfg.batching.max_wait_ms / 1000, wakeup,
                          live=frozenset(name for name, live in self.live.items() if live))
        forwarded: queue.Queue = queue.Queue(maxsize=1)  # one batch in flight between the two halves
        handoff: queue.Queue = queue.Queue(maxsize=cfg.batching.queue_size)
        self._spawn("infer", infer_loop, runner, batcher, forwarded, self._events, self.plan.torch_threads,
                    forward=True)
        self._spawn("post", post_loop, runner, forwarded, handoff, self._events)
        self._outputs = Outputs(built.by_source, built.shared + self._extra_sinks, depth=cfg.batching.queue_size,
                                abort=self._events.abort, start_thread=self._spawn)
        self._outputs.start()
        reporting = Reporting(StatsBoard(self.live), self._statuses, watchers, cfg.live.stats_interval_s)
        self._spawn("sinks", deliver_loop, handoff, self._outputs, self._results, reporting, self._events)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any, forward: bool = False) -> threading.Thread:
        """Start a thread. On a CPU run the ``forward`` pass's thread takes every core and the others make
        way for it (see :func:`_beside_forward`)."""
        if self.plan is not None and self.plan.torch_threads is not None and not forward:
            target = functools.partial(_beside_forward, target, self.plan.yielding)
        thread = threading.Thread(target=target, args=args, name=f"streamseg-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

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
            self._statuses.put_nowait(status)
        except queue.Full:
            pass

    def stop(self) -> None:
        """Ask for a graceful end: stop reading, finish the outputs with what is done."""
        self._events.stop.set()

    def abort(self) -> None:
        """End now: drop undelivered results, close the outputs."""
        self._events.abort.set()
        self._events.stop.set()

    def close(self) -> None:
        """Stop every stage, join every thread, close every source. Safe to call twice."""
        if self._state is State.CLOSED:
            return
        self._events.stop.set()
        if not self._finished:
            self._events.abort.set()
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("thread %s did not stop within %.0f s", thread.name, JOIN_TIMEOUT_S)
        if not any(thread.is_alive() for thread in self._threads):  # else one may still read them
            for source in self.sources:
                source.close()
        if self._caller_threads is not None:
            torch.set_num_threads(self._caller_threads)  # the caller's own again, and the default for new threads
        if self._keeps_memory:
            release_freed_memory()
            self._keeps_memory = False
        self._state = State.CLOSED

    # -- consuming -----------------------------------------------------------------------------

    def results(self) -> Iterator[FrameResult]:
        """Yield results in order (per source) as they are ready, until every source has ended.

        Raises:
            StreamsegError: (or whatever a stage raised) when a stage fails; the run is stopped.
        """
        while (item := self._next()) is not None:
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
        signals = StopSignals(self.stop, self.abort, enabled=handle_interrupt)
        with signals:  # left only once the outputs are closed: a second signal meanwhile aborts, not kills
            try:
                self._start_for_run(signals)
                if on_started is not None and self._state is State.RUNNING:
                    on_started()
                started = time.monotonic()  # the run's time, as its fps, counts from its first frame's start
                for result in self.results() if self._state is State.RUNNING else ():
                    summary.frames += 1
                    if on_result is not None:
                        on_result(result)
            finally:
                summary.seconds = time.monotonic() - started
                summary.signal = signals.first
                self.close()
        summary.outputs = self.outputs + ([self.web.address] if self.web is not None else [])
        summary.sources = self.final_stats
        if signals.aborted:
            raise Aborted(signals.last)
        if self._timed_out and summary.frames == 0:
            raise _no_frames(self.final_stats, self.config.duration)
        return summary

    def _start_for_run(self, signals: StopSignals) -> None:
        if self._state is not State.NEW:
            return
        try:
            self.start()
        except StreamsegError:
            if signals.first is None:
                raise
            # Stopped while opening: what failed is the signal's doing, not the source's.


def _no_frames(stats: list[dict], duration: float | None) -> SourceError:
    """A camera down or a wrong URL is not a run that succeeded with nothing to show."""
    why = "; ".join(f"{s['source']}: {s.get('trouble') or 'no frame yet'}" for s in stats
                    if s["live"] and not s["frames"])
    return SourceError(f"no frame in {duration:g} s ({why})")
