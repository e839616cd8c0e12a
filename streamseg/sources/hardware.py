"""NVDEC decoding through PyAV, for files and camera streams when the model runs on CUDA.

Whether a CUDA device can decode is asked once per process and device, before any source opens, so
that a machine without one costs a single log line, and a camera that is down is never mistaken
for a missing decoder.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import av

__all__ = ["hardware_decoder"]

log = logging.getLogger(__name__)


def hardware_decoder(device: str | None, on_gpu: bool = False) -> Any:
    """PyAV's settings for NVDEC decoding on ``device`` ("cuda" or "cuda:N"), or None when no hardware
    decoding is asked for or none is possible here. Codecs NVDEC lacks decode on the CPU by themselves.
    ``on_gpu``: decoded frames stay on the GPU (read through DLPack) instead of being copied to the host;
    PyAV then opens CUDA's primary context, the one torch computes in."""
    if device is None or not device.startswith("cuda"):
        return None
    try:
        from av.codec.hwaccel import HWAccel
    except ImportError:  # PyAV before 14
        _unavailable(device, f"PyAV {av.__version__} has no hardware decoding")
        return None
    index = device.partition(":")[2] or None
    reason = _probe(index)
    if reason is not None:
        _unavailable(device, reason)
        return None
    return HWAccel("cuda", device=index, allow_software_fallback=True, is_hw_owned=on_gpu)


@functools.cache
def _probe(index: str | None) -> str | None:
    """None when a CUDA decoder context opens on device ``index``, else why not."""
    from av.codec.hwaccel import HWAccel

    try:
        HWAccel("cuda", device=index).create(av.Codec("h264", "r"))
    except (av.FFmpegError, OSError, ValueError, NotImplementedError) as exc:
        return str(getattr(exc, "strerror", None) or exc)
    return None


@functools.cache
def _unavailable(device: str, reason: str) -> None:
    log.info("hardware decoding unavailable on %s (%s); decoding on the CPU", device, reason)
