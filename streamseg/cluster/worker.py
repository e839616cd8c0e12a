"""A cluster worker: the model loaded once; whole video files run one at a time, or a share of the cameras
watched, through the ordinary pipeline.

A plain class: :mod:`.files` and :mod:`.cameras` make it a Ray actor (``ray.remote(...)(SegmentWorker)``). It is
a threaded actor, so that the driver can ask for :meth:`SegmentWorker.progress` or
:meth:`SegmentWorker.stats` while a file runs or cameras are watched, and so that cameras moved to it from
a dead worker run beside its own.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..exceptions import Aborted, StreamsegError
from ..jobs import Outcome, run_one
from ..sinks.base import Sink
from ..sinks.web import jpeg
from ..urls import redact_text
from .chunks import Chunk, chunk_config

__all__ = ["FrameTap", "SegmentWorker", "StatsTap", "Working"]


@dataclass(frozen=True)
class Working:
    """What a worker is doing: its input, the frames done so far and the input's frame count (None where
    the file does not say)."""

    input: str | None = None
    frames: int = 0
    total: int | None = None


class StatsTap(Sink):
    """An output that keeps the run's latest per-source statistics, for the driver to ask for."""

    wants_stats = True

    def __init__(self) -> None:
        self.snapshot: list[dict] = []

    def write(self, result: Any) -> None:
        pass

    def publish_stats(self, snapshot: list[dict]) -> None:
        self.snapshot = snapshot


class FrameTap(Sink):
    """An output that keeps each source's newest drawn picture as JPEG (at most ``max_fps`` a second), for
    the driver's page to ask for."""

    stage = "serve"
    wants_annotated = True

    def __init__(self, max_fps: float) -> None:
        self.max_fps = max_fps
        self.latest: dict[str, bytes] = {}
        self._encoded: dict[str, float] = {}

    def write(self, result: Any) -> None:
        now = time.monotonic()
        if now - self._encoded.get(result.source, 0.0) < 1 / self.max_fps:
            return
        self._encoded[result.source] = now
        if (encoded := jpeg(result)) is not None:
            self.latest[result.source] = encoded


class SegmentWorker:
    """Runs ``config``'s job on one device: whole inputs (:meth:`run`) or cameras (:meth:`watch`)."""

    def __init__(self, config: Config, cpus: int) -> None:
        self.config = config
        self.cpus = cpus
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._model = None
        self._lock = threading.Lock()
        self._working = Working()
        self._watching: list[tuple[Any, list]] = []  # (pipeline, [its stats, its pictures]) per watch() under way

    def load(self) -> tuple[str, str | None]:
        """Load the model; this worker's name and, where the model cannot be loaded, why (an error here is
        the job's, not one input's, so it is returned for the driver to report rather than raised)."""
        import torch

        from ..inference.loading import load_model

        torch.set_num_threads(self.cpus)
        model = self.config.model
        try:
            self._model = load_model(model.name, device=model.device, dtype=model.dtype)
        except StreamsegError as exc:
            return self.name, str(exc)
        return self.name, None

    # -- files ---------------------------------------------------------------------------------

    def run(self, video: str) -> Outcome:
        """Run one input to its end (or skip it, finished before); its outcome."""
        return run_one(self.config, video, self._segment)

    def run_chunk(self, video: str, chunk: Chunk, parts: dict[str, str]) -> Outcome:
        """Run one chunk of ``video`` (see :mod:`.chunks`), its outputs at ``parts``; its outcome."""
        at, started = time.time(), time.monotonic()
        try:
            frames = self._segment(chunk_config(self.config, video, chunk, parts))
        except StreamsegError as exc:
            return Outcome(video, seconds=time.monotonic() - started, error=redact_text(str(exc)), started=at)
        return Outcome(video, tuple(parts.values()), frames, time.monotonic() - started, started=at)

    def progress(self) -> Working:
        with self._lock:
            return self._working

    def _segment(self, one: Config) -> int:
        from ..runtime.pipeline import Pipeline

        pipeline = Pipeline(one, model=self._model)
        video = one.sources[0]
        self._set(Working(video))

        def started() -> None:
            self._set(Working(video, 0, next(iter(pipeline.infos.values())).frames if pipeline.infos else None))

        def counted(_result: object) -> None:
            with self._lock:
                self._working = Working(video, self._working.frames + 1, self._working.total)

        try:
            summary = pipeline.run(on_result=counted, handle_interrupt=False, on_started=started)
        finally:
            pipeline.close()
            self._set(Working())
        if summary.interrupted:
            raise Aborted(summary.signal or 15)
        return summary.frames

    def _set(self, working: Working) -> None:
        with self._lock:
            self._working = working

    # -- cameras -------------------------------------------------------------------------------

    def watch(self, cameras: Sequence[str], part_of: Sequence[str], seconds: float | None,
              pictures_fps: float = 0.0) -> list[dict]:
        """Run ``cameras`` (batched together, as in one process) for ``seconds``, or until :meth:`stop`; their
        last statistics. Named, and their outputs' files, as in a run of all of ``part_of``. With
        ``pictures_fps``, their newest drawn pictures are kept for :meth:`pictures` that many times a second."""
        from ..runtime.pipeline import Pipeline

        config = dataclasses.replace(self.config, sources=tuple(cameras), duration=seconds)
        taps = [StatsTap(), *([FrameTap(pictures_fps)] if pictures_fps else [])]
        pipeline = Pipeline(config, model=self._model, part_of=part_of, sinks=taps)
        with self._lock:
            self._watching.append((pipeline, taps))
        try:
            pipeline.run(handle_interrupt=False)
        finally:
            pipeline.close()
            with self._lock:
                self._watching.remove((pipeline, taps))
        return [{**stats, "worker": self.name} for stats in pipeline.final_stats]

    def stats(self) -> list[dict]:
        """The latest statistics of every camera this worker watches, each with the worker's name."""
        with self._lock:
            return [{**stats, "worker": self.name} for _, taps in self._watching for stats in taps[0].snapshot]

    def pictures(self) -> dict[str, bytes]:
        """The newest drawn picture (JPEG) of every camera this worker watches, by name."""
        with self._lock:
            return {name: image for _, taps in self._watching for tap in taps[1:] for name, image in tap.latest.items()}

    def stop(self) -> None:
        """End every watch (its recordings finished as at the end of a run)."""
        with self._lock:
            for pipeline, _ in self._watching:
                pipeline.stop()
