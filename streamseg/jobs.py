"""Many videos, one after another, one set of outputs each in a folder (``-o OUTDIR/``).

Each input's outputs are written under a temporary name (``clip.part.mp4``) and renamed once the input has
run to its end, so that a rerun skips what is finished and a file cut short by a crash is never taken for
a finished one. A failed input is reported and skipped while the others go on; ``manifest.jsonl`` in the
output folder records every input's outcome (frames, fps, seconds, error).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import stores
from .config import Config
from .containers import names_folder
from .exceptions import ConfigError, StreamsegError
from .sources.base import LIST_SUFFIX, files_named, is_glob, is_image, list_file_paths
from .sources.images import natural_key
from .urls import redact_text

__all__ = ["VIDEO_SUFFIXES", "Outcome", "check_folders", "finished", "labels_partial", "many_videos", "move_files",
           "partial", "record", "run_jobs", "run_one", "targets"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".ts", ".m4v", ".flv", ".mpg", ".mpeg")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Outcome:
    """What became of one input."""

    input: str
    outputs: tuple[str, ...] = ()
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    skipped: bool = False  # its outputs were there already, complete
    started: float | None = None  # when it started, in seconds since the epoch

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _videos_in(spec: str) -> list[str] | None:
    """The video files a folder, a glob or a list file names (natural order; a list keeps its own), or None
    where it names none, or names images (a job over images runs as one source instead)."""
    if spec.lower().endswith(LIST_SUFFIX) and os.path.isfile(spec):
        try:
            listed = list_file_paths(spec)
        except (OSError, UnicodeDecodeError):
            return None  # read as a list of images, which says what is wrong with it
        return listed if listed and all(Path(p).suffix.lower() in VIDEO_SUFFIXES for p in listed) else None
    if not (os.path.isdir(spec) or is_glob(spec)):
        return None
    found = files_named(spec)
    if any(is_image(path) for path in found):
        return None
    videos = [path for path in found if Path(path).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(videos, key=natural_key) or None


def many_videos(config: Config) -> list[str] | None:
    """The inputs of a job over many videos (a folder, a glob or a list of them, or several video files, with
    ``-o OUTDIR/``), or None for a run of its own."""
    if not config.output.video or not names_folder(config.output.video):
        return None
    inputs: list[str] = []
    for spec in config.sources:
        videos = _videos_in(spec)
        if videos is None and Path(spec).suffix.lower() in VIDEO_SUFFIXES and "://" not in spec:
            videos = [spec]
        if videos is None:
            return None  # images, a camera, a stream: not a job over video files
        inputs += videos
    return inputs


# The per-input files a many-videos job writes into a folder each: config key -> suffix.
_FOLDERED = {"masks": ".jsonl", "tracks": ".txt"}


def targets(config: Config, video: str) -> dict[str, str]:
    """An input's outputs in the folders given: ``OUTDIR/<stem>.mp4``, its masks ``<stem>.jsonl``, its
    tracks ``<stem>.txt``."""
    stem = Path(video).stem
    found = {"video": stores.join(config.output.video or ".", f"{stem}.mp4")}
    for key, suffix in _FOLDERED.items():
        if folder := getattr(config.output, key):
            found[key] = stores.join(folder, f"{stem}{suffix}")
    return found


def partial(path: str) -> str:
    """Where an output is written until its input has run to its end: ``clip.part.mp4``."""
    folder, slash, name = path.rpartition("/") if stores.is_url(path) else ("", "", path)
    p = Path(name)
    return folder + slash + str(p.with_name(f"{p.stem}.part{p.suffix}"))


def labels_partial(config: Config, video: str) -> str | None:
    """Where an input's label maps are written until it has run to its end (``LABELS/.clip.part/``); their
    files then move into the labels folder, where they are named after the input (``clip-000042.png``)."""
    return str(Path(config.output.labels) / f".{Path(video).stem}.part") if config.output.labels else None


def move_files(folder: str, into: str) -> None:
    """Move every file of ``folder`` into ``into``, then remove ``folder``."""
    Path(into).mkdir(parents=True, exist_ok=True)
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            os.replace(entry.path, os.path.join(into, entry.name))
        os.rmdir(folder)


def check_folders(config: Config) -> None:
    """Refuse per-input outputs that several inputs would share.

    Raises:
        ConfigError: the masks or tracks go to a single file, or a COCO file is asked for, which several
            inputs cannot share.
    """
    for key in _FOLDERED:
        if (given := getattr(config.output, key)) and not names_folder(given):
            raise ConfigError(f"output.{key}: with many videos, give a folder (--save-{key} DIR/), not {given}")
    if config.output.labels and stores.is_url(config.output.labels):
        raise ConfigError("output.labels: label maps go to a local or shared folder, not a URL")
    if config.output.coco:
        raise ConfigError("output.coco: not written for many videos (each would overwrite it); give one video, "
                          "or export --save-masks DIR/")


def finished(config: Config, video: str) -> bool:
    """Whether every output of ``video`` is there under its final name (written by an earlier run)."""
    return all(stores.exists(path) for path in targets(config, video).values())


def run_one(config: Config, video: str, run: Callable[[Config], int]) -> Outcome:
    """Run one input through ``run`` (which runs a config to its end and returns its frames, or raises),
    its outputs written under temporary names and renamed when complete. An input whose outputs are all
    there already is skipped. A :class:`StreamsegError` is the input's failure, reported in the outcome; any
    other exception (a KeyboardInterrupt from a signal) leaves its outputs under their temporary names."""
    final = targets(config, video)
    if finished(config, video):
        log.info("%s: done before, skipped", video)
        return Outcome(video, tuple(final.values()), skipped=True)
    # Outputs to a URL are made in a local folder, then uploaded (see streamseg.stores).
    workdir = tempfile.mkdtemp(prefix="streamseg-") if any(map(stores.is_url, final.values())) else None
    local = {key: os.path.join(workdir, path.rsplit("/", 1)[-1]) if workdir and stores.is_url(path) else path
             for key, path in final.items()}
    for path in local.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    labels = labels_partial(config, video)
    if labels:
        shutil.rmtree(labels, ignore_errors=True)  # what a crashed run left
    one = dataclasses.replace(config, sources=(video,), output=dataclasses.replace(
        config.output, labels=labels, **{key: partial(path) for key, path in local.items()}))
    at, started = time.time(), time.monotonic()
    try:
        try:
            frames = run(one)
        except StreamsegError as exc:
            outcome = Outcome(video, seconds=time.monotonic() - started, error=redact_text(str(exc)), started=at)
            log.warning("%s: failed, skipped (%s)", video, outcome.error)
            return outcome
        if labels:
            move_files(labels, config.output.labels)
        for key, path in final.items():
            if os.path.exists(partial(local[key])):
                stores.publish(partial(local[key]), path, partial(path))
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return Outcome(video, tuple(final.values()), frames, time.monotonic() - started, started=at)


def run_jobs(config: Config, inputs: Sequence[str], run: Callable[[Config], int],
             worker: str | None = None) -> list[Outcome]:
    """Run each input in turn with :func:`run_one`, each outcome recorded in the manifest as it ends. A
    KeyboardInterrupt (a signal) from ``run`` ends the job there, the input it stopped left unfinished.

    Raises:
        ConfigError: the masks or tracks go to a single file, which several inputs cannot share.
    """
    check_folders(config)
    worker = worker or socket.gethostname()
    outcomes = []
    for video in inputs:
        outcome = run_one(config, video, run)
        outcomes.append(outcome)
        if not outcome.skipped:
            record(manifest_path(config), outcome, worker)
    return outcomes


def manifest_path(config: Config) -> str:
    """The job's manifest: ``manifest.jsonl`` in the videos' output folder."""
    return stores.join(config.output.video or ".", MANIFEST)


def record(manifest: str, outcome: Outcome, worker: str, **extra: object) -> None:
    """Append one input's outcome to the manifest (one JSON line, written whole)."""
    line = {"input": outcome.input, "worker": worker, "frames": outcome.frames, "fps": round(outcome.fps, 3),
            "seconds": round(outcome.seconds, 3), "started": round(outcome.started, 3) if outcome.started else None,
            "outputs": list(outcome.outputs), "error": outcome.error, **extra}
    stores.append_line(manifest, json.dumps(line))
