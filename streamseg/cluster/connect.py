"""Ray, an optional extra, and the connection to a cluster: ``local`` starts one on this machine."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ..config import Config
from ..exceptions import ConfigError
from .worker import SegmentWorker

__all__ = ["connected", "for_workers", "ray_module", "worker_class"]

INSTALL = "pip install 'streamseg[ray]'"


def ray_module() -> ModuleType:
    """Ray, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--cluster needs Ray, which is not installed: {INSTALL}") from None
    return ray


@contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at ``address`` for the block: ``local`` starts a Ray instance on this
    machine (and stops it after), ``auto`` finds the one this node belongs to, anything else is a Ray address.
    A process connected already (a caller's own ``ray.init``) keeps its connection.

    Raises:
        ConfigError: no cluster answers at ``address``.
    """
    ray = ray_module()
    if ray.is_initialized():
        yield ray
        return
    _check_answers(address)
    # The workers' logs stay in the cluster's log folder: the driver reports each input's outcome itself.
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cluster.address: cannot connect to Ray at {address!r}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_answers(address: str) -> None:
    """Refuse at once a ``host:port`` where nothing listens: Ray itself waits minutes for it, printing as
    it goes."""
    if address in ("local", "auto") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"cluster.address: expected local, auto, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(f"cluster.address: nothing answers at {address} ({exc.strerror or exc}); start Ray "
                          f"there first (ray start --head) or use --cluster local") from None


def worker_class(ray: ModuleType, config: Config) -> tuple[int, Any]:
    """How many workers fit the cluster, and :class:`SegmentWorker` as a Ray actor class: a GPU each where the
    cluster has GPUs and the model is not pinned to the CPU, ``cluster.worker_cpus`` CPUs each. Ray restarts
    none: the driver replaces a dead worker itself, knowing what it was doing."""
    resources = ray.cluster_resources()
    cpus = config.cluster.worker_cpus
    gpus = int(resources.get("GPU", 0)) if config.model.device != "cpu" else 0
    fit = gpus if gpus else int(resources.get("CPU", 0)) // cpus
    # Threads: a file or a share of cameras, cameras moved from a dead worker, and the driver's questions.
    actor = ray.remote(num_cpus=cpus, num_gpus=1 if gpus else 0, max_restarts=0, max_task_retries=0,
                       max_concurrency=16, scheduling_strategy="SPREAD")(SegmentWorker)
    return config.cluster.workers or max(fit, 1), actor


def for_workers(config: Config) -> Config:
    """``config`` with its output paths made absolute: a worker's working folder is not the driver's (a
    folder keeps its closing slash)."""
    absolute = {key: os.path.abspath(value) + ("/" if value.endswith(("/", os.sep)) else "")
                for key in ("video", "masks", "tracks", "labels", "coco")
                if (value := getattr(config.output, key)) and "://" not in value}
    return dataclasses.replace(config, output=dataclasses.replace(config.output, **absolute))
