"""The model's forward pass replayed from CUDA graphs: one launch where it took thousands.

Mask2Former's forward pass launches a few thousand small kernels. On a fast GPU, launching them takes
longer than running them (the launching thread is busy while the GPU waits), and in a pipeline that
thread also shares the interpreter lock with decoding, encoding and exporting. A graph captured once per input shape replays the whole pass from one call. The runner
captures the frames' colour conversion and preprocessing in the same graph where it can: each op
launched from Python gives the interpreter lock away and must wait to take it back, dozens of times a
batch.

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

__all__ = ["Graphed", "capture_supported", "forward_logits", "graph_sizes", "graphed_forward"]

log = logging.getLogger(__name__)

Logits = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # class logits, mask logits, query embeddings
Outputs = tuple[torch.Tensor, ...]


def forward_logits(model: Callable, pixel_values: torch.Tensor) -> Logits:
    """The class and mask logits of one forward pass, launched kernel by kernel, and each query's
    embedding from the decoder's last layer (B, Q, D), which the tracker compares across frames."""
    out = model(pixel_values=pixel_values)
    return out.class_queries_logits, out.masks_queries_logits, out.transformer_decoder_last_hidden_state


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
    inputs: torch.Tensor  # what the graph reads: copy each batch in, then replay
    outputs: Outputs  # what the graph writes; overwritten by the next replay
    constants: _KeptConstants  # kept alive as long as the graph reads them


class Graphed:
    """``fn(x)``, a tuple of tensors with one row per row of ``x``, replayed from a CUDA graph per input
    shape; ``fallback(x)`` (default: ``fn`` launched as it is) where there is no graph.

    Batches are padded to the next size of :func:`graph_sizes` (the padding rows hold earlier frames;
    each row's result must depend on that row alone). If a capture fails (an older transformers whose
    forward pass waits on the device, say), ``fallback`` runs from then on, with one warning; running out
    of device memory is raised, for the caller to retry smaller. Each graph keeps its own device memory:
    past ``max_graphs`` input shapes (checkpoints that resize by the shortest edge give one per aspect
    ratio of the sources), new shapes take the fallback.
    """

    def __init__(self, fn: Callable[[torch.Tensor], Outputs], batch_size: int, *,
                 fallback: Callable[[torch.Tensor], Outputs] | None = None, max_graphs: int = 16,
                 what: str = "this model", instead: str = "running it without") -> None:
        self.fn = fn
        self.fallback = fallback or fn
        self.instead = instead  # what the warning of a failed capture says happens now
        self.sizes = graph_sizes(batch_size)
        self.max_graphs = max_graphs
        self.what = what
        self.failed: str | None = None  # why graphs are not used, once a capture failed
        self._graphs: dict[tuple, _Graph] = {}
        self._full_said = False

    def __call__(self, x: torch.Tensor) -> Outputs:
        count = len(x)
        size = next((s for s in self.sizes if s >= count), None)
        if self.failed is not None or size is None:
            return self.fallback(x)
        key = (size, *x.shape[1:], x.dtype, _layout(x))
        graph = self._graphs.get(key)
        if graph is None and len(self._graphs) >= self.max_graphs:
            if not self._full_said:
                self._full_said = True
                log.info("%d CUDA graphs captured; input shapes beyond them run without", self.max_graphs)
            return self.fallback(x)
        if graph is None:
            graph = self._capture(x, size)
            if graph is None:
                return self.fallback(x)
            self._graphs[key] = graph
        graph.inputs[:count].copy_(x)
        graph.graph.replay()
        # Copied out: the next replay overwrites the graph's own, while this batch is post-processed.
        return tuple(out[:count].clone() for out in graph.outputs)

    def _capture(self, x: torch.Tensor, size: int) -> _Graph | None:
        device = x.device
        rows = torch.arange(size, device=device) % len(x)  # the padding repeats real rows
        static = x[rows].contiguous(memory_format=_layout(x))
        constants = _KeptConstants(device)
        try:
            # Warm-up on a side stream, as CUDA graphs ask (lazy initializations happen outside the capture).
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), constants:
                for _ in range(2):
                    self.fn(static)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            constants.reuse = True
            # thread_local: other threads (post-processing, copies to the host) go on while this one captures.
            with constants, torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = tuple(self.fn(static))
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to capture means: run the fallback
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("CUDA graphs unavailable for %s (%s); %s", self.what, self.failed, self.instead)
            torch.cuda.synchronize(device)
            return None
        log.info("captured a CUDA graph of %s for %d x %s", self.what, size, tuple(x.shape[1:]))
        return _Graph(graph, static, outputs, constants)


def graphed_forward(model: Callable, batch_size: int, max_graphs: int = 16) -> Graphed:
    """``model(pixel_values=...)``'s class and mask logits, replayed from CUDA graphs (see :class:`Graphed`)."""
    return Graphed(lambda pixel_values: forward_logits(model, pixel_values), batch_size, max_graphs=max_graphs)


def _layout(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
