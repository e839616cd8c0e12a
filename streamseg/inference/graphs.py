"""The model's forward pass replayed from CUDA graphs: one launch where it took thousands.

Mask2Former's forward pass launches a few thousand small kernels. On a fast GPU, launching them takes
longer than running them (H100, swin-tiny, 8 frames at 384x384: the launching thread 99% busy, the
GPU 71%), and in a pipeline that thread also shares the interpreter lock with decoding, encoding and
exporting. A graph captured once per input shape replays the whole pass from one call.

transformers builds a few small tensors from Python lists on the device in each pass (the pixel
decoder's level shapes); such a copy waits for the device, which a capture forbids. They are the same
in every pass of one input shape, so the warm-up passes keep them and the capture reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["GraphedForward", "capture_supported", "forward_logits", "graph_sizes"]

log = logging.getLogger(__name__)

Logits = tuple[torch.Tensor, torch.Tensor]  # class logits, mask logits


def forward_logits(model: Callable, pixel_values: torch.Tensor) -> Logits:
    """The class and mask logits of one forward pass, launched kernel by kernel."""
    out = model(pixel_values=pixel_values)
    return out.class_queries_logits, out.masks_queries_logits


def capture_supported(version: str | None = None) -> bool:
    """Whether this transformers' Mask2Former can be captured: from 5.0 its forward pass never waits on
    the device; 4.x's masked-attention decoder indexes with ``torch.where`` in every layer, which does,
    so a capture there would only fail (and is not tried)."""
    if version is None:
        import transformers

        version = transformers.__version__
    major = version.split(".")[0]
    return major.isdigit() and int(major) >= 5


def graph_sizes(batch_size: int) -> list[int]:
    """Batch sizes that get a graph: powers of two below ``batch_size``, and ``batch_size`` itself.
    A smaller batch (the end of a file, a few live cameras) runs padded to the next one."""
    sizes = [1]
    while sizes[-1] * 2 < batch_size:
        sizes.append(sizes[-1] * 2)
    return sorted(set(sizes) | {batch_size})


class _KeptConstants(TorchFunctionMode):
    """Tensors made on ``device`` from Python numbers, lists or tuples (``torch.tensor``, ``torch.as_tensor``):
    kept as they are made, or, once ``reuse`` is set, handed back from what was kept.

    A mode is per thread: other threads' calls are not seen.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.kept: dict[tuple, torch.Tensor] = {}
        self.reuse = False

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in (torch.tensor, torch.as_tensor) or not args or not isinstance(args[0], (list, tuple, int, float)):
            return func(*args, **kwargs)
        device = kwargs.get("device")
        if device is None or torch.device(device).type != self.device.type:
            return func(*args, **kwargs)
        key = (func.__name__, repr(args[0]), str(kwargs.get("dtype")))
        if self.reuse:
            if key not in self.kept:
                raise RuntimeError(f"the model made a tensor from {args[0]!r} on the device only while captured")
            return self.kept[key]
        self.kept[key] = out = func(*args, **kwargs)
        return out


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    pixel_values: torch.Tensor  # the input the graph reads: copy each batch in, then replay
    logits: Logits  # what the graph writes; overwritten by the next replay
    constants: _KeptConstants  # kept alive as long as the graph reads them


class GraphedForward:
    """``model(pixel_values=...)``'s class and mask logits, replayed from a CUDA graph per input shape.

    Batches are padded to the next size of :func:`graph_sizes` (the padding rows hold earlier frames;
    each frame's result depends on that frame alone). If a capture fails (an older
    transformers whose forward pass waits on the device, say), the model runs as it is from then on,
    with one warning; running out of device memory is raised, for the caller to retry smaller.
    Each graph keeps its own device memory: past ``max_graphs`` input shapes (checkpoints that resize
    by the shortest edge give one per aspect ratio of the sources), new shapes run as they are.
    """

    def __init__(self, model: torch.nn.Module, batch_size: int, max_graphs: int = 16) -> None:
        self.model = model
        self.sizes = graph_sizes(batch_size)
        self.max_graphs = max_graphs
        self.failed: str | None = None  # why graphs are not used, once a capture failed
        self._graphs: dict[tuple, _Graph] = {}
        self._full_said = False

    def __call__(self, pixel_values: torch.Tensor) -> Logits:
        count = len(pixel_values)
        size = next((s for s in self.sizes if s >= count), None)
        if self.failed is not None or size is None:
            return self._eager(pixel_values)
        key = (size, *pixel_values.shape[1:], pixel_values.dtype, _layout(pixel_values))
        graph = self._graphs.get(key)
        if graph is None and len(self._graphs) >= self.max_graphs:
            if not self._full_said:
                self._full_said = True
                log.info("%d CUDA graphs captured; input shapes beyond them run without", self.max_graphs)
            return self._eager(pixel_values)
        if graph is None:
            graph = self._capture(pixel_values, size)
            if graph is None:
                return self._eager(pixel_values)
            self._graphs[key] = graph
        graph.pixel_values[:count].copy_(pixel_values)
        graph.graph.replay()
        # Copied out: the next replay overwrites the graph's own, while this batch is post-processed.
        return graph.logits[0][:count].clone(), graph.logits[1][:count].clone()

    def _eager(self, pixel_values: torch.Tensor) -> Logits:
        return forward_logits(self.model, pixel_values)

    def _capture(self, pixel_values: torch.Tensor, size: int) -> _Graph | None:
        device = pixel_values.device
        rows = torch.arange(size, device=device) % len(pixel_values)  # the padding repeats real frames
        static = pixel_values[rows].contiguous(memory_format=_layout(pixel_values))
        constants = _KeptConstants(device)
        try:
            # Warm-up on a side stream, as CUDA graphs ask (lazy initializations happen outside the capture).
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), constants:
                for _ in range(2):
                    self._eager(static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            constants.reuse = True
            # thread_local: other threads (post-processing, copies to the host) go on while this one captures.
            with constants, torch.cuda.graph(graph, capture_error_mode="thread_local"):
                logits = self._eager(static)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to capture means: run the model as it is
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("CUDA graphs unavailable for this model (%s); running it without", self.failed)
            torch.cuda.synchronize(device)
            return None
        log.info("captured a CUDA graph for %d frames of %s", size, tuple(pixel_values.shape[1:]))
        return _Graph(graph, static, logits, constants)


def _layout(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
