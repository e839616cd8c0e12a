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

__all__ = ["decoder_problem", "hardware_decoder"]

log = logging.getLogger(__name__)


def hardware_decoder(device: str | None, on_gpu: bool = False) -> Any:
    """PyAV's settings for NVDEC decoding on ``device`` ("cuda" or "cuda:N"), or None when no hardware
    decoding is asked for or none is possible here. Codecs NVDEC lacks decode on the CPU by themselves.
    ``on_gpu``: decoded frames stay on the GPU (read through DLPack) instead of being copied to the host,
    in the CUDA context torch computes in; call it on the thread that decodes."""
    if device is None or not device.startswith("cuda"):
        return None
    reason = decoder_problem(device)
    if reason is not None:
        _unavailable(device, reason)
        return None
    from av.codec.hwaccel import HWAccel  # there, since decoder_problem found no fault

    index = device.partition(":")[2] or None
    # Frames kept on the GPU must live in torch's context, the device's primary one. FFmpeg's way to it
    # (primary_ctx, PyAV's default with is_hw_owned) wants that context made with blocking sync and refuses
    # one torch has started ("Primary context already active with incompatible flags"); the H200 check's
    # --gpu-frames runs decoded on the CPU, which fits. So torch's context is made current on this thread,
    # and FFmpeg takes the current one.
    if on_gpu and _torch_context_made_current(index):
        return HWAccel("cuda", device=index, allow_software_fallback=True, is_hw_owned=True,
                       options={"primary_ctx": "0", "current_ctx": "1"})
    return HWAccel("cuda", device=index, allow_software_fallback=True)


def _torch_context_made_current(index: str | None) -> bool:
    """Whether torch's context for CUDA device ``index`` is now current on this thread (False where this
    torch has no CUDA: NVDEC's frames are then copied to the host)."""
    import torch

    if not torch.cuda.is_available():
        return False
    device = torch.device("cuda", int(index or 0))
    torch.cuda.set_device(device)
    torch.cuda.current_stream(device).query()  # a runtime call: CUDA binds the primary context to this thread
    return True


@functools.cache
def _probe(index: str | None) -> str | None:
    """None when a CUDA decoder context opens on device ``index``, else why not."""
    from av.codec.hwaccel import HWAccel

    try:
        HWAccel("cuda", device=index).create(av.Codec("h264", "r"))
    except (av.FFmpegError, OSError, ValueError, NotImplementedError) as exc:
        return str(getattr(exc, "strerror", None) or exc)
    return None


def decoder_problem(device: str) -> str | None:
    """Why NVDEC cannot decode on ``device`` ("cuda" or "cuda:N") here, or None: asked where a run names it
    (``--decoder cuda``), which must then fail as ``--device cuda`` does on a machine without CUDA, not
    quietly decode on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    try:
        from av.codec.hwaccel import HWAccel  # noqa: F401
    except ImportError:  # PyAV before 14
        return f"PyAV {av.__version__} has no hardware decoding"
    return _probe(device.partition(":")[2] or None)


@functools.cache
def _unavailable(device: str, reason: str) -> None:
    log.info("hardware decoding unavailable on %s (%s); decoding on the CPU", device, reason)
