"""The run's decisions, made once from the config and the device before anything runs: a pure function,
tested without a model, a file or a thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Config
from ..inference.preprocess import PreprocessSpec, resized_size

__all__ = ["OVERSIZED", "Drawing", "RunPlan", "drawing", "oversized", "plan"]


@dataclass(frozen=True)
class RunPlan:
    """How a run uses the machine.

    Attributes:
        device: the model's device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        decoder: the CUDA device that decodes files and streams with NVDEC, or None (the CPU).
        yuv: sources hand on YUV 4:2:0, which the model's device turns into RGB.
        codec_threads: threads for each decoder and encoder: 1 on a CPU run, where the model already uses
            every core (a pool each would crowd out the forward pass), else 0 (FFmpeg's choice).
        torch_threads: on a CPU run, the forward pass's thread takes this many cores and every other
            thread one (see :mod:`streamseg.inference.threads`); None on an accelerator.
        yielding: on a CPU run over files, threads other than the forward pass's run at the lowest
            priority (throughput first); from live sources, or published as a paced stream, they do not
            (latency first).
    """

    device: str
    decoder: str | None
    yuv: bool
    codec_threads: int
    torch_threads: int | None
    yielding: bool

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")


def plan(config: Config, device: str, live: Sequence[bool], cores: int) -> RunPlan:
    """The run's plan for ``config`` on ``device``, with sources whose liveness is ``live``, on a process
    whose torch takes ``cores`` threads."""
    gpu = device.startswith("cuda")
    cpu = device == "cpu"
    if config.decoder != "auto":
        decoder = None if config.decoder == "cpu" else config.decoder
    else:
        decoder = device if gpu else None
    return RunPlan(
        device=device,
        decoder=decoder,
        yuv=config.color_conversion == "device" or (config.color_conversion == "auto" and gpu),
        codec_threads=1 if cpu else 0,
        torch_threads=cores if cpu else None,
        yielding=cpu and not any(live) and not config.output.stream,
    )


@dataclass(frozen=True)
class Drawing:
    """Whether results are drawn, and whether the drawing leaves the device as YUV for encoders only."""

    draw: bool
    yuv_out: bool


def drawing(run: RunPlan, wants_annotated: Sequence[bool], takes_yuv: Sequence[bool], annotate: bool) -> Drawing:
    """Frames are drawn when an output shows them or the caller asked (``annotate``). Encoders take YUV:
    made on the device when they are the only ones to see the drawn frames.

    Args:
        wants_annotated, takes_yuv: each output's declared needs, in the same order.
    """
    drawn_for = [yuv for wants, yuv in zip(wants_annotated, takes_yuv) if wants]
    return Drawing(draw=bool(drawn_for) or annotate, yuv_out=run.yuv and not annotate and all(drawn_for))


# How many times the model's input a frame may hold before it is said to be far larger: a 4K frame for
# a model that takes 1333x800 is about 8 times; an 8192x8192 scan, 63.
OVERSIZED = 16


def oversized(name: str, width: int, height: int, spec: PreprocessSpec) -> str | None:
    """A warning where a source's frames are far larger than what the model sees: it sees them scaled down,
    but the overlay and the exports are made at the source's size, which then takes most of the time and
    memory. None where they are not."""
    model_h, model_w = resized_size(height, width, spec)
    if width * height <= OVERSIZED * model_w * model_h:
        return None
    return (f"{name}: {width}x{height} frames are {width * height / (model_w * model_h):.0f} times the model's "
            f"input ({model_w}x{model_h}): drawing and the exports, made at the source's size, will take most of "
            "the time and memory; scale the video down first (ffmpeg -vf scale=1920:-2) unless full-size masks "
            "are needed")
