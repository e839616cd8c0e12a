"""The pipeline: sources → batcher → model runner → sinks, one thread per stage.

Threads and what links them::

    producer "source:<name>" ─┐ (one bounded queue per source)
    producer "source:<name>" ─┼─> worker "infer" ──(results)──> "sinks" ──(results)──> caller
                              ┘

The pipeline owns every thread: it starts them in :meth:`Pipeline.start` and joins them in
:meth:`Pipeline.close`. :meth:`Pipeline.stop` asks for a graceful end (sources stop reading, frames
in flight are dropped, sinks finish their files); the abort event makes the sink thread drop what is
left and close at once. An exception in any stage stops the run and is re-raised in the caller with
its original traceback. Memory is bounded by the queue sizes, whatever the length of the video.
"""

from __future__ import annotations

import enum
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .annotators.masks import MaskAnnotator
from .batching import POLL_S, Batcher, EndOfStream, Failure, get, produce, put
from .config import Config
from .exceptions import ConfigError
from .inference.loading import guess_task, load_model
from .inference.runner import ModelRunner
from .sinks.jsonl import JsonlSink
from .sinks.video import VideoSink, check_writable
from .sources.file import VideoInfo, probe, read_frames
from .types import FrameResult

__all__ = ["Pipeline", "RunSummary", "Sink"]

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0


class Sink(Protocol):
    """What the sink thread needs from an output."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass
class RunSummary:
    """What a finished run did."""

    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Pipeline:
    """Runs one segmentation job; use it as a context manager.

    Example:
        >>> with Pipeline(load_config("configs/sample.yaml", sources=("samples/shapes.mp4",),
        ...                           output__video="out.mp4")) as p:
        ...     summary = p.run()

    Args:
        config: the whole job: sources, model, thresholds, batching, rendering, outputs.
        sinks: extra outputs, written after the ones the config names.
        masks_to_host: copy masks to host memory for every result (the Python API wants them);
            otherwise only when an output needs them.
        profile: exact per-stage timings in ``FrameResult.stats`` (syncs the device after each stage).
    """

    def __init__(self, config: Config, *, sinks: list[Sink] | None = None, masks_to_host: bool = False,
                 profile: bool = False) -> None:
        if not config.sources:
            raise ConfigError("sources: at least one source is needed")
        if len(config.sources) > 1 and config.output.video:
            raise ConfigError("output.video: one output file takes one source")
        self.config = config
        self.infos: dict[str, VideoInfo] = {}
        self.task = ""
        self.runner: ModelRunner | None = None
        self._extra_sinks = list(sinks or [])
        self._masks_to_host = masks_to_host or bool(config.output.masks)
        self._profile = profile
        self._state = State.NEW
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._wakeup = threading.Event()
        self._threads: list[threading.Thread] = []
        self._results: queue.Queue = queue.Queue(maxsize=config.batching.queue_size)
        self._finished = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Check inputs and outputs, load the model, start every thread."""
        if self._state is not State.NEW:
            raise RuntimeError(f"a pipeline runs once; this one is {self._state.value}")
        cfg = self.config
        for path in (cfg.output.video, cfg.output.masks):
            if path:
                check_writable(path)
        names = _source_names(cfg.sources)
        self.infos = {name: probe(src) for name, src in zip(names, cfg.sources)}
        loaded = load_model(cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype)
        self.task = cfg.model.task if cfg.model.task != "auto" else guess_task(cfg.model.name, loaded.id2label)
        color_by = cfg.render.color_by if cfg.render.color_by != "auto" else "class"
        draw = bool(cfg.output.video) or any(getattr(s, "wants_annotated", False) for s in self._extra_sinks)
        annotator = MaskAnnotator(cfg.render.opacity, cfg.render.outlines, cfg.render.labels, color_by)
        self.runner = ModelRunner(
            loaded, self.task, cfg.postprocess, annotator=annotator if draw else None,
            masks_to_host=self._masks_to_host, compile=cfg.model.compile, profile=self._profile,
        )
        sinks = self._open_sinks(names[0])
        source_queues: dict[str, queue.Queue] = {}
        for name, src in zip(names, cfg.sources):
            q: queue.Queue = queue.Queue(maxsize=cfg.batching.queue_size)
            source_queues[name] = q
            self._spawn(f"source:{name}", produce,
                        lambda src=src, name=name: read_frames(src, name=name), q, self._stop, self._wakeup, name)
        batcher = Batcher(source_queues, cfg.batching.batch_size, cfg.batching.max_wait_ms / 1000, self._wakeup)
        handoff: queue.Queue = queue.Queue(maxsize=cfg.batching.queue_size)
        self._spawn("infer", self._infer_loop, batcher, handoff)
        self._spawn("sinks", self._sink_loop, handoff, sinks)
        self._state = State.RUNNING

    def _open_sinks(self, first_source: str) -> list[Sink]:
        out = self.config.output
        sinks: list[Sink] = []
        if out.video:
            info = self.infos[first_source]
            sinks.append(VideoSink(
                out.video, time_base=info.time_base, rate=info.average_rate,
                audio_from=info.path if out.audio and info.has_audio else None, codec=out.codec, crf=out.crf,
            ))
        if out.masks:
            sink = JsonlSink(out.masks)
            sink.open()
            sinks.append(sink)
        return sinks + self._extra_sinks

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
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
        self._state = State.CLOSED

    # -- stage bodies (each runs in its own thread) ----------------------------------------------

    def _infer_loop(self, batcher: Batcher, out: queue.Queue) -> None:
        assert self.runner is not None
        try:
            while True:
                batch = batcher.next_batch(self._stop)
                if batch is None:
                    break
                for result in self.runner(batch):
                    if not put(out, result, self._abort):
                        return
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            put(out, Failure.capture(exc, "inference"), self._abort)
            self._stop.set()
            return
        put(out, EndOfStream(), self._abort)

    def _sink_loop(self, inbox: queue.Queue, sinks: list[Sink]) -> None:
        final: Any = EndOfStream()
        stages = [getattr(s, "stage", type(s).__name__) for s in sinks]
        try:
            while not self._abort.is_set():
                item = get(inbox, self._abort)
                if item is None:
                    break
                if isinstance(item, (EndOfStream, Failure)):
                    final = item
                    break
                for sink, stage in zip(sinks, stages):
                    clock = time.perf_counter()
                    sink.write(item)
                    item.stats[stage] = item.stats.get(stage, 0.0) + time.perf_counter() - clock
                if not put(self._results, item, self._abort):
                    break
        except BaseException as exc:  # noqa: BLE001 - carried to the caller
            final = Failure.capture(exc, "sinks")
            self._stop.set()
        finally:
            for sink in sinks:
                try:
                    sink.close()
                except BaseException as exc:  # noqa: BLE001
                    if not isinstance(final, Failure):
                        final = Failure.capture(exc, "sinks")
        # Outputs are complete before the caller hears the end.
        while True:
            try:
                self._results.put(final, timeout=POLL_S)
                return
            except queue.Full:
                if self._abort.is_set():
                    return

    # -- consuming -----------------------------------------------------------------------------

    def results(self) -> Iterator[FrameResult]:
        """Yield results in order as they are ready, until every source has ended.

        Raises:
            StreamsegError: (or whatever a stage raised) when a stage fails; the run is stopped.
        """
        while True:
            item = self._next(timeout=None)
            if item is None:
                return
            yield item

    def _next(self, timeout: float | None) -> FrameResult | None:
        if self._state is not State.RUNNING:
            raise RuntimeError("start the pipeline (or enter its context) before reading results")
        if self._finished:
            return None
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                item = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if not any(t.is_alive() for t in self._threads):
                    self._finished = True
                    return None
                if end is not None and time.monotonic() >= end:
                    raise TimeoutError
                continue
            if isinstance(item, EndOfStream):
                self._finished = True
                return None
            if isinstance(item, Failure):
                self._finished = True
                self._stop.set()
                log.debug("%s failed:\n%s", item.stage, item.trace)
                raise item.error
            return item

    def run(self, on_result: Callable[[FrameResult], None] | None = None,
            handle_interrupt: bool = True) -> RunSummary:
        """Run the job to its end and return a summary.

        On the main thread, the first Ctrl-C stops gracefully (outputs are finished and play), the
        second aborts and raises KeyboardInterrupt once the outputs are closed.
        """
        if self._state is State.NEW:
            self.start()
        summary = RunSummary(outputs=[p for p in (self.config.output.video, self.config.output.masks) if p])
        started = time.monotonic()
        presses = 0

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                log.warning("stopping: finishing the outputs (press Ctrl-C again to abort)")
                self.stop()
            else:
                self.abort()

        previous = None
        if handle_interrupt and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            for result in self.results():
                summary.frames += 1
                if on_result is not None:
                    on_result(result)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            summary.seconds = time.monotonic() - started
            summary.interrupted = presses > 0
            self.close()
        if presses > 1:
            raise KeyboardInterrupt
        return summary


def _source_names(sources: tuple[str, ...]) -> list[str]:
    """Short unique names for log lines and records: the file name, with a counter if repeated."""
    names: list[str] = []
    for src in sources:
        base = src.rstrip("/").rsplit("/", 1)[-1] or src
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names

