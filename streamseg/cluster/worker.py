"""A cluster worker: the model loaded once, whole inputs run one at a time through the ordinary pipeline.

A plain class: :mod:`.pool` makes it a Ray actor (``ray.remote(...)(FileWorker)``). It is a threaded actor
with two threads, so that the driver can ask for :meth:`FileWorker.progress` while :meth:`FileWorker.run`
works.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

from ..config import Config
from ..exceptions import Aborted, StreamsegError
from ..jobs import Outcome, run_one

__all__ = ["FileWorker", "Working"]


@dataclass(frozen=True)
class Working:
    """What a worker is doing: its input, the frames done so far and the input's frame count (None where
    the file does not say)."""

    input: str | None = None
    frames: int = 0
    total: int | None = None


class FileWorker:
    """Runs whole inputs of ``config``'s job, each with its outputs under temporary names until complete."""

    def __init__(self, config: Config, cpus: int) -> None:
        self.config = config
        self.cpus = cpus
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._model = None
        self._lock = threading.Lock()
        self._working = Working()

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

    def run(self, video: str) -> Outcome:
        """Run one input to its end (or skip it, finished before); its outcome."""
        return run_one(self.config, video, self._segment)

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
