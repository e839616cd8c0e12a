"""The driver's side of a job over many videos on Ray workers: the work list, a worker per slot, retries
when a worker dies, the manifest, progress."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import av

from .. import stores
from ..config import Config
from ..exceptions import ConfigError
from ..jobs import Outcome, check_folders, finished, manifest_path, move_files, partial, record, targets
from .chunks import Chunk, join, plan
from .connect import connected, for_workers
from .progress import PoolView, WorkerView
from .worker import Working
from .workers import Worker, Workers

__all__ = ["DEATHS_TO_FAIL", "FilePool", "Joins", "Task", "run_on_cluster"]

log = logging.getLogger(__name__)

CHUNKS = ".chunks"  # in the output folder: the parts of long files until they are joined
DEATHS_TO_FAIL = 2  # an input whose worker dies this many times is marked failed (it may be what kills them)
POLL_S = 1.0  # how often the driver looks at its workers (and asks them for progress)


@dataclass(frozen=True)
class Task:
    """One piece of work for a worker: a whole input, or one chunk of it with its parts' paths."""

    video: str
    chunk: Chunk | None = None
    parts: tuple[tuple[str, str], ...] = ()  # (output key, path) of the chunk's outputs

    def __str__(self) -> str:
        return self.video if self.chunk is None else f"{self.video} (part {self.chunk.index + 1})"


@dataclass(eq=False)
class _Worker(Worker):
    running: Any = None  # the ObjectRef of its run() call
    task: Task | None = None
    frames: int = 0  # frames of the inputs it has finished
    working: Working = field(default_factory=Working)


class FilePool:
    """Ray workers (:class:`~streamseg.cluster.worker.SegmentWorker` actors), each given the next input as it
    finishes one.

    - A worker that dies (its process killed, its node lost) costs only the input it was running: that input
      goes back to the front of the list for another worker, and Ray is asked for a new worker in its place,
      which starts wherever there is room. An input whose worker dies :data:`DEATHS_TO_FAIL` times is failed.
    - An input's own failure (it cannot be decoded, an output cannot be written) is its outcome at once: a
      second try would fail the same way.
    - A model that cannot be loaded fails the job (:class:`ModelError`), as it does without a cluster.
    - When no worker is running and none has started for ``cluster.start_timeout_s`` (the cluster has no
      room for one), the inputs left are failed rather than waited for forever.
    """

    def __init__(self, ray: ModuleType, config: Config, on_outcome: Callable[[Task, Outcome, str, int], None],
                 on_progress: Callable[[PoolView], None]) -> None:
        self._ray = ray
        self._config = config
        self._on_outcome = on_outcome
        self._on_progress = on_progress
        self._workers = Workers(ray, config, _Worker)
        self._started = self._polled = time.monotonic()
        self._unit = "inputs"

    def run(self, tasks: Sequence[Task], unit: str = "inputs") -> list[Outcome]:
        """Run every task; their outcomes, in the order they ended."""
        todo, outcomes = deque(tasks), []
        deaths: Counter[Task] = Counter()
        self._workers.start(min(self._workers.fit, len(todo)))
        self._unit = unit
        alive_at = time.monotonic()

        def finish(task: Task, outcome: Outcome, worker: str) -> None:
            outcomes.append(outcome)
            self._on_outcome(task, outcome, worker, deaths[task] + 1)

        while todo or any(w.running for w in self._workers.all):
            for w in self._workers.all:
                if w.loaded is None and w.running is None and todo:
                    w.task = task = todo.popleft()
                    w.running = (w.actor.run.remote(task.video) if task.chunk is None
                                 else w.actor.run_chunk.remote(task.video, task.chunk, dict(task.parts)))
            pending = [r for w in self._workers.all for r in (w.loaded, w.running) if r is not None]
            # Whichever answers first is dealt with at once: an idle worker gets its next input without waiting.
            if not pending:  # every worker gone and waiting for room
                time.sleep(POLL_S)
            ready, _ = self._ray.wait(pending, num_returns=1, timeout=POLL_S) if pending else ([], [])
            for ref in ready:
                w = next(w for w in self._workers.all if ref in (w.loaded, w.running))
                if ref is w.loaded:
                    self._workers.check(w)
                    continue
                task, w.running, w.task = w.task, None, None
                try:
                    outcome = self._ray.get(ref)
                except self._ray.exceptions.RayActorError:
                    deaths[task] += 1
                    log.warning("%s: its worker %s died (%d of %d)", task, w.name, deaths[task], DEATHS_TO_FAIL)
                    if deaths[task] >= DEATHS_TO_FAIL:
                        finish(task, Outcome(task.video, error=f"its worker died {deaths[task]} times"), w.name)
                    else:
                        todo.appendleft(task)
                    self._workers.replace(w)
                    continue
                except self._ray.exceptions.RayTaskError as exc:  # not a StreamsegError: a bug, said in one line
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    outcome = Outcome(task.video, error=f"{type(cause).__name__}: {str(cause).splitlines()[0]}")
                w.frames += outcome.frames
                finish(task, outcome, w.name)
            if self._workers.ready():
                alive_at = time.monotonic()
            elif time.monotonic() - alive_at > self._config.cluster.start_timeout_s:
                why = self._workers.no_room()
                while todo:
                    task = todo.popleft()
                    finish(task, Outcome(task.video, error=why), "none")
            if time.monotonic() - self._polled >= POLL_S:
                self._polled = time.monotonic()
                self._poll_progress(len(tasks), outcomes)
        self._poll_progress(len(tasks), outcomes)
        return outcomes

    def close(self) -> None:
        """Stop every worker (those still waiting for room too)."""
        self._workers.close()

    def _poll_progress(self, total: int, outcomes: list[Outcome]) -> None:
        busy = [w for w in self._workers.all if w.running is not None]
        asked = {w.actor.progress.remote(): w for w in busy}
        answered, _ = self._ray.wait(list(asked), num_returns=len(asked), timeout=0.5) if asked else ([], [])
        for ref in answered:
            try:
                asked[ref].working = self._ray.get(ref)
            except self._ray.exceptions.RayError:
                pass  # died meanwhile: its run() says so
        for w in self._workers.all:
            if w.running is None:
                w.working = Working()
        self._on_progress(PoolView(
            total=total, done=sum(o.error is None for o in outcomes), failed=sum(o.error is not None for o in outcomes),
            seconds=time.monotonic() - self._started,
            workers={w.name: WorkerView(w.frames + w.working.frames, time.monotonic() - w.ready_at, w.working)
                     for w in self._workers.ready()},
            frames=sum(o.frames for o in outcomes) + sum(w.working.frames for w in self._workers.all), unit=self._unit))


def run_on_cluster(config: Config, inputs: Sequence[str], progress: Callable[[PoolView], None] = lambda view: None,
                   on_outcome: Callable[[Outcome, str], None] = lambda outcome, worker: None) -> list[Outcome]:
    """Run a job over many videos on the Ray cluster at ``config.cluster.address``: the inputs finished
    before are skipped without starting Ray; the others run on workers, each outcome recorded in the
    manifest by this driver as it ends (with the worker and the attempt). Paths are made absolute: the
    workers' working folder is not this one.

    Raises:
        ConfigError: Ray is not installed, no cluster answers, or an output is a single file.
        ModelError: the model cannot be loaded on a worker.
    """
    import os

    check_folders(config)
    if config.cluster.chunk_seconds and stores.is_url(config.output.video or ""):
        raise ConfigError("cluster.chunk_seconds: a long file's parts are joined on the driver from a folder every "
                          "node sees; give -o such a path, not a URL")
    config = for_workers(config)
    inputs = [os.path.abspath(video) for video in inputs]
    skipped = [Outcome(video, skipped=True) for video in inputs if finished(config, video)]
    todo = [video for video in inputs if not finished(config, video)]
    if not todo:
        return skipped
    joins = Joins(config, todo, on_outcome)
    with connected(config.cluster.address or "local") as ray:
        pool = FilePool(ray, config, joins.ended, progress)
        try:
            pool.run(joins.tasks, unit="parts" if config.cluster.chunk_seconds else "inputs")
        finally:
            pool.close()
    return skipped + joins.outcomes


class Joins:
    """The tasks of a job, an input each or, with ``cluster.chunk_seconds``, a task per chunk of a long input;
    as tasks end, each input's outcome (its chunks joined once all are done) recorded in the manifest."""

    def __init__(self, config: Config, inputs: Sequence[str],
                 on_outcome: Callable[[Outcome, str], None]) -> None:
        self.config = config
        self.on_outcome = on_outcome
        self.tasks: list[Task] = []
        self.outcomes: list[Outcome] = []
        self._chunks: dict[str, list[Task]] = {}
        self._ended: dict[str, dict[int, tuple[Outcome, str]]] = {}
        for video in inputs:
            chunks = plan(video, config.cluster.chunk_seconds) if config.cluster.chunk_seconds else []
            if len(chunks) < 2:
                self.tasks.append(Task(video))
                continue
            folder = self._folder(video)
            shutil.rmtree(folder, ignore_errors=True)  # a crashed run's parts are not trusted
            folder.mkdir(parents=True)
            suffix = Path(targets(config, video)["video"]).suffix
            self._chunks[video] = [Task(video, chunk, tuple(
                (key, str(folder / f"{chunk.index}{ext}") if ext else str(folder / key)) for key, ext in
                (("video", suffix), ("masks", ".jsonl"), *((("labels", ""),) if config.output.labels else ()))))
                for chunk in chunks]
            self.tasks += self._chunks[video]

    def ended(self, task: Task, outcome: Outcome, worker: str, attempt: int) -> None:
        if task.chunk is None:
            self._record(outcome, worker, attempt)
            return
        done = self._ended.setdefault(task.video, {})
        done[task.chunk.index] = (outcome, worker)
        chunks = self._chunks[task.video]
        if len(done) < len(chunks):
            return
        parts = [done[k][0] for k in range(len(chunks))]
        workers = " ".join(sorted({w for _, w in done.values()}))
        seconds, started = sum(o.seconds for o in parts), min((o.started for o in parts if o.started), default=None)
        errors = [f"part {k + 1}: {o.error}" for k, o in enumerate(parts) if o.error]
        if not errors:
            try:
                self._join(task.video, chunks)
            except (OSError, av.FFmpegError, ValueError) as exc:
                errors.append(f"joining its parts: {exc}")
        if errors:
            self._record(Outcome(task.video, seconds=seconds, error="; ".join(errors), started=started), workers,
                         attempt, chunks=len(chunks))
            return
        final = targets(self.config, task.video)
        self._record(Outcome(task.video, tuple(final.values()), sum(o.frames for o in parts), seconds,
                             started=started), workers, attempt, chunks=len(chunks))

    def _join(self, video: str, tasks: list[Task]) -> None:
        final = targets(self.config, video)
        for path in final.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            join(video, [t.chunk for t in tasks], [dict(t.parts) for t in tasks],
                 {key: partial(path) for key, path in final.items()})
        except BaseException:
            for path in final.values():
                with contextlib.suppress(OSError):
                    os.remove(partial(path))
            raise
        if self.config.output.labels:  # every part's label maps, named by their frames, in one folder
            move_files(str(self._folder(video) / "labels"), self.config.output.labels)
        for path in final.values():
            os.replace(partial(path), path)
        shutil.rmtree(self._folder(video), ignore_errors=True)
        with contextlib.suppress(OSError):
            self._folder(video).parent.rmdir()  # the chunks' folder, once the last input's are gone

    def _folder(self, video: str) -> Path:
        return Path(self.config.output.video or ".") / CHUNKS / Path(video).stem

    def _record(self, outcome: Outcome, worker: str, attempt: int, **extra: object) -> None:
        self.outcomes.append(outcome)
        record(manifest_path(self.config), outcome, worker, attempt=attempt, **extra)
        self.on_outcome(outcome, worker)
