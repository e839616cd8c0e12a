"""The model runner: one batch of frames in, one result per frame out, all heavy work on the device."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..annotators.masks import MaskAnnotator
from ..config import PostprocessConfig
from ..exceptions import ConfigError, ModelError
from ..ops import download, grouped, stacked
from ..tracking import Tracking
from ..types import Frame, FrameResult, to_host
from .color import rgb_to_yuv420, yuv420_to_rgb
from .graphs import Graphed, capture_supported, forward_logits, graphed_forward
from .loading import LoadedModel
from .postprocess import postprocess
from .preprocess import preprocess, preprocess_batch

__all__ = ["ModelRunner", "Forwarded"]

log = logging.getLogger(__name__)

STAGES = ("upload", "preprocess", "forward", "postprocess", "track", "render", "download")


class _Timer:
    """Seconds per stage; with ``exact`` the device is synchronized first, so queued work is counted."""

    def __init__(self, device: torch.device, exact: bool) -> None:
        self.device = device
        self.exact = exact and device.type == "cuda"
        self.times = dict.fromkeys(STAGES, 0.0)
        self._clock = time.perf_counter()

    def restart(self) -> None:
        self._clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.exact:
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times[stage] += now - self._clock
        self._clock = now


@dataclass
class Forwarded:
    """A batch between the two halves of the runner: frames, their device images, raw model outputs."""

    frames: list[Frame]
    images: list[torch.Tensor]
    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    embeddings: torch.Tensor  # (B, Q, D): each query's decoder embedding, for the tracker
    timer: _Timer
    ready: torch.cuda.Event | None = None  # on CUDA: recorded on the compute stream after the forward pass


@contextlib.contextmanager
def _model_errors(batch_size: int) -> Iterator[None]:
    """Translate torch's errors into ModelError at the runner's boundary."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelError(f"out of device memory on a batch of {batch_size} frames; lower --batch-size, "
                         "or try --dtype float16 or a smaller model") from exc
    except RuntimeError as exc:
        raise ModelError(f"inference failed: {str(exc).splitlines()[0]}") from exc


class ModelRunner:
    """Runs a loaded Mask2Former over batches of frames.

    Args:
        loaded: the model, its preprocessing and labels.
        task: "semantic", "instance" or "panoptic".
        post: thresholds for post-processing.
        annotator: draws the overlay on the device; None skips rendering.
        masks_to_host: copy the masks to host memory (needed by mask export and the Python API).
        compile: wrap the forward pass in ``torch.compile``.
        channels_last: run the model and its input in channels-last layout.
        profile: synchronize the device after each stage so the per-stage times in ``FrameResult.stats``
            are exact (costs a little speed; the benchmark turns it on).
        yuv_out: turn drawn frames into YUV 4:2:0 on the device, for an encoder (half the bytes to copy,
            no conversion on the host).
        tracking: gives thing segments their track ids between post-processing and drawing; None: no ids.
        cuda_graphs: on CUDA and without ``compile``, replay the forward pass from a CUDA graph per input
            shape (see :mod:`.graphs`), with the colour conversion and preprocessing where a batch's frames
            are of one kind; ``batch_size`` is the largest batch, to which smaller ones are padded.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        task: str,
        post: PostprocessConfig,
        *,
        annotator: MaskAnnotator | None = None,
        tracking: Tracking | None = None,
        masks_to_host: bool = True,
        compile: bool = False,
        profile: bool = False,
        channels_last: bool = False,
        yuv_out: bool = False,
        cuda_graphs: bool = False,
        batch_size: int = 1,
    ) -> None:
        self.loaded = loaded
        self.task = task
        self.post = post
        self.classes = wanted_classes(post.classes, loaded.id2label)
        self.annotator = annotator
        self.tracking = tracking
        self.masks_to_host = masks_to_host
        self.profile = profile
        self.yuv_out = yuv_out
        self._forward = loaded.model
        self._layout = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        if compile:
            # Said at warning level, the CLI's default: otherwise minutes pass with no frame and no word.
            log.warning("torch.compile: the first batches compile the model, which takes a minute or more")
            self._forward = torch.compile(loaded.model)
        self.max_batch = sys.maxsize  # frames per forward pass; lowered when the device runs out of memory
        self._batch_size = batch_size
        self._graphed: Graphed | None = None  # the model alone, for batches of mixed frames
        self._whole: dict[tuple, Graphed] | None = None  # by kind of frame: colours, preprocessing and the model
        if cuda_graphs and not compile and loaded.device.type == "cuda":
            if capture_supported():
                self._graphed = graphed_forward(loaded.model, batch_size)
                self._whole = {}
            else:
                log.info("CUDA graphs need transformers 5 or later; the forward pass launches its kernels one by one")
        # On CUDA, uploads and post-processing have their own streams: batch n + 1 is copied while batch n
        # computes, and post-processing's few host syncs wait for its own batch, not the next forward pass.
        # The forward pass has its own too, off CUDA's default stream: FFmpeg decodes on that one, and its
        # copy of each frame to the host waits for everything queued there, a forward pass included.
        cuda = loaded.device.type == "cuda"
        self._gpu = None  # the model's GPU, as its tensors name it
        if cuda:
            index = loaded.device.index
            self._gpu = torch.device("cuda", index if index is not None else torch.cuda.current_device())
        self._upload_stream = torch.cuda.Stream(loaded.device) if cuda else None
        self._post_stream = torch.cuda.Stream(loaded.device) if cuda else None
        self._compute_stream = torch.cuda.Stream(loaded.device) if cuda else None
        self._outputs_checked = False  # the first batch's logits are looked at once for NaN

    def __call__(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Segment a batch of frames (any mix of sizes)."""
        return self.finish(self.forward(frames))

    def forward(self, frames: Sequence[Frame]) -> Forwarded:
        """First half: upload, preprocess, forward. On a GPU this only queues work and returns at once."""
        with _model_errors(len(frames)), torch.inference_mode(), self._compute_stream_for_batch():
            timer = _Timer(self.loaded.device, self.profile)
            whole = self._whole_graph(frames)
            if whole is not None:  # one replay for all but the upload; its time is counted as the forward's
                raw = self._upload_batch(frames)
                timer.lap("upload")
                rgb, class_logits, mask_logits, embeddings = self._replay_whole(whole, raw)
                images = list(rgb.unbind(0))
                timer.lap("forward")
            else:
                images = self._upload(frames)
                timer.lap("upload")
                pixel_values = preprocess(images, self.loaded.spec, self.loaded.dtype, self._layout)
                timer.lap("preprocess")
                class_logits, mask_logits, embeddings = self._run_model(pixel_values)
                timer.lap("forward")
            ready = None
            if self._post_stream is not None:
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(self.loaded.device))
            return Forwarded(list(frames), images, class_logits, mask_logits, embeddings, timer, ready)

    def _run_model(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The forward pass, in chunks of at most ``max_batch`` frames. A chunk that runs out of device
        memory is halved and run again, and the smaller size holds for the rest of the run: a batch
        size too large for this device costs a warning, not the run."""
        outputs, start = [], 0
        while start < len(pixel_values):
            size = min(self.max_batch, len(pixel_values) - start)
            try:
                outputs.append(self._forward_chunk(pixel_values[start : start + size]))
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self.max_batch = size // 2
                log.warning("out of device memory on %d frames at once; forward passes now take at most %d",
                            size, self.max_batch)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += size
        if len(outputs) == 1:
            return outputs[0]
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    def _forward_chunk(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._graphed is not None:
            return self._graphed(pixel_values)  # type: ignore[return-value]
        return forward_logits(self._forward, pixel_values)

    def _whole_graph(self, frames: Sequence[Frame]) -> Graphed | None:
        """The graph of colour conversion, preprocessing and forward pass for ``frames``, if they are of
        one kind (size, layout, colour matrix, all in host memory or all on the GPU) and no smaller batch
        was forced."""
        if self._whole is None or len(frames) > min(self.max_batch, self._batch_size):
            return None
        placed = {(_kind(f), f.pixels.device if isinstance(f.pixels, torch.Tensor) else None) for f in frames}
        if len(placed) > 1:
            return None
        ((pixel_format, matrix, _), gpu), = placed
        if gpu is not None and gpu != self._gpu:  # a decoder on another GPU
            return None
        kind = (pixel_format, matrix)  # the graphs of each shape are Graphed's own
        if kind not in self._whole:
            def captured(raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return self._prepared_forward(raw, kind, lambda values: forward_logits(self._forward, values))

            def without(raw: torch.Tensor) -> tuple[torch.Tensor, ...]:  # the model alone replayed, if it can be
                return self._prepared_forward(raw, kind, self._run_model)

            self._whole[kind] = Graphed(captured, self._batch_size, fallback=without,
                                        what="preprocessing with the model",
                                        instead="preprocessing runs op by op, the model alone is replayed")
        return self._whole[kind]

    def _replay_whole(self, whole: Graphed, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        try:
            return whole(raw)
        except torch.cuda.OutOfMemoryError:  # preprocessing's memory too was too much: the model alone from now
            self._whole = None
            log.warning("out of device memory capturing preprocessing with the model; the model alone is replayed")
            torch.cuda.empty_cache()
            return whole.fallback(raw)

    def _prepared_forward(self, raw: torch.Tensor, kind: tuple, model: Callable) -> tuple[torch.Tensor, ...]:
        """(RGB images, class logits, mask logits) of a batch of one kind of frame, as uploaded."""
        images = raw if kind[0] == "rgb24" else yuv420_to_rgb(raw, *kind)
        pixel_values = preprocess_batch(images, self.loaded.spec, self.loaded.dtype, self._layout)
        return (images, *model(pixel_values))

    def finish(self, batch: Forwarded) -> list[FrameResult]:
        """Second half: post-process, draw, copy to the host. Runs while the next batch's forward is queued."""
        frames, timer = batch.frames, batch.timer
        timer.restart()
        with _model_errors(len(frames)), torch.inference_mode(), self._post_stream_for(batch):
            segs = postprocess(
                self.task,
                batch.class_logits,
                batch.mask_logits,
                [(f.height, f.width) for f in frames],
                threshold=self.post.threshold,
                mask_threshold=self.post.mask_threshold,
                overlap_threshold=self.post.overlap_threshold,
                label_ids_to_fuse=self.post.label_ids_to_fuse,
                id2label=self.loaded.id2label,
            )
            if self.classes is not None:
                segs = [seg.only(self.classes) for seg in segs]
            timer.lap("postprocess")
            if self.tracking is not None:
                segs = self.tracking.update(frames, segs, batch.embeddings)
                timer.lap("track")
            if not self._outputs_checked:
                self._outputs_checked = True
                _warn_unless_finite(batch.class_logits)
            drawn = []
            if self.annotator:
                drawn = self.annotator.annotate_batch(batch.images, segs)
            timer.lap("render")
            formats = ["rgb24"] * len(frames)
            if drawn and self.yuv_out:
                drawn, formats = _to_yuv(drawn)
            annotated: list[np.ndarray | None] = [None] * len(frames)
            if drawn:
                annotated = list(_to_host(drawn))
            if self.masks_to_host:
                segs = to_host(segs, wait=False)
            if self._post_stream is not None:
                self._post_stream.synchronize()  # the copies are done: what leaves here is complete
            timer.lap("download")
        per_frame = {k: v / len(frames) for k, v in timer.times.items()}
        return [FrameResult(f, s, a, dict(per_frame), fmt, len(frames))
                for f, s, a, fmt in zip(frames, segs, annotated, formats)]

    @contextlib.contextmanager
    def _compute_stream_for_batch(self) -> Iterator[None]:
        """Run the enclosed work on the compute stream, after what CUDA's default stream holds so far:
        frames NVDEC left on the GPU (copied out of its frames there), the model's weights."""
        if self._compute_stream is None:
            yield
            return
        self._compute_stream.wait_stream(torch.cuda.default_stream(self.loaded.device))
        with torch.cuda.stream(self._compute_stream):
            yield

    @contextlib.contextmanager
    def _post_stream_for(self, batch: Forwarded) -> Iterator[None]:
        """Run the enclosed work on the post-processing stream, after the batch's forward pass."""
        if self._post_stream is None or batch.ready is None:
            yield
            return
        self._post_stream.wait_event(batch.ready)
        # Not reused by the compute stream while this one reads it.
        _used_on(self._post_stream, [batch.class_logits, batch.mask_logits, *batch.images])
        with torch.cuda.stream(self._post_stream):
            yield

    def _upload(self, frames: Sequence[Frame]) -> list[torch.Tensor]:
        """Each frame as (H, W, 3) uint8 RGB on the device; YUV frames go up as they are and become RGB there.
        Frames already on the GPU (NVDEC's, made on the default stream, which computing waits for) stay."""
        tensors = [f.pixels if isinstance(f.pixels, torch.Tensor) else torch.from_numpy(f.pixels) for f in frames]
        device = self.loaded.device
        if self._upload_stream is None:
            return _to_rgb(frames, [t.to(device) for t in tensors])  # the CPU: the same tensors
        with torch.cuda.stream(self._upload_stream):
            tensors = [t.to(device) if t.is_cuda else t for t in tensors]  # a decoder on another GPU
            uploaded = upload_together(tensors, lambda parts: _through_pinned(parts, device))
        self._computed_after_upload(uploaded)
        return _to_rgb(frames, uploaded)

    def _upload_batch(self, frames: Sequence[Frame]) -> torch.Tensor:
        """Frames of one shape, as decoded (YUV or RGB), stacked on the device."""
        if isinstance(frames[0].pixels, torch.Tensor):  # NVDEC's, on the model's GPU already
            pixels = [f.pixels for f in frames]
            self._computed_after_upload(pixels)  # made on the default stream, read on the compute stream
            return torch.stack(pixels)
        tensors = [torch.from_numpy(f.pixels) for f in frames]
        with torch.cuda.stream(self._upload_stream):
            batch = _through_pinned(tensors, self.loaded.device)
        self._computed_after_upload([batch])
        return batch

    def _computed_after_upload(self, uploaded: list[torch.Tensor]) -> None:
        """Order the compute stream after the uploads, and keep their memory until it is done with it."""
        compute = torch.cuda.current_stream(self.loaded.device)
        compute.wait_stream(self._upload_stream)
        _used_on(compute, uploaded)


def _used_on(stream: torch.cuda.Stream, tensors: list[torch.Tensor]) -> None:
    """Tell the allocator ``stream`` reads ``tensors``, once an allocation (a batch's frames share one):
    their memory is not reused before the work queued there so far is done."""
    for t in {t.untyped_storage().data_ptr(): t for t in tensors}.values():
        t.record_stream(stream)


def upload_together(tensors: list[torch.Tensor],
                    send: Callable[[list[torch.Tensor]], torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` on the device: those on the host of one shape and dtype are sent together by ``send``
    (which returns them stacked there); tensors already on a GPU stay as they are.

    One copy and one transfer a batch, not a pinned copy and a transfer a frame: each op gives the
    interpreter lock away and waits to take it back, and a frame's ops held the infer thread on a GPU
    machine while it was mostly idle."""
    sent = list(tensors)
    keys = [None if t.is_cuda else (tuple(t.shape), t.dtype) for t in tensors]
    for members in grouped(keys).values():
        for i, part in zip(members, send([tensors[i] for i in members]).unbind(0)):
            sent[i] = part
    return sent


def _through_pinned(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``parts`` stacked into pinned host memory in one copy, then queued to ``device`` without waiting
    (the GPU's copy engine reads pinned memory directly)."""
    joined = torch.empty((len(parts), *parts[0].shape), dtype=parts[0].dtype, pin_memory=True)
    torch.stack(parts, out=joined)
    return joined.to(device, non_blocking=True)


def _kind(frame: Frame) -> tuple:
    """What decides how a frame's pixels become the model's RGB: layout, colour matrix (YUV only), shape."""
    yuv = frame.pixel_format != "rgb24"
    return frame.pixel_format, frame.matrix if yuv else None, tuple(frame.pixels.shape)


def _to_rgb(frames: Sequence[Frame], pixels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Convert the YUV frames among ``pixels`` to RGB, together where they share a size, layout and matrix."""
    keys = [None if f.pixel_format == "rgb24" else _kind(f) for f in frames]
    return _in_groups(pixels, keys, lambda key, batch: yuv420_to_rgb(batch, key[0], key[1]))


def _to_yuv(images: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[str]]:
    """Drawn frames of an even size as YUV 4:2:0, converted together where they share a size; others stay RGB."""
    keys = [None if image.shape[0] % 2 or image.shape[1] % 2 else image.shape for image in images]
    formats = ["rgb24" if key is None else "yuv420p" for key in keys]
    return _in_groups(images, keys, lambda key, batch: rgb_to_yuv420(batch)), formats


def _in_groups(tensors: list[torch.Tensor], keys: list, convert: Callable) -> list[torch.Tensor]:
    """``convert(key, stacked)`` run once per distinct key on the tensors that share it; a None key
    leaves its tensor as it is."""
    out = list(tensors)
    for key, members in grouped(keys).items():
        converted = convert(key, stacked([tensors[i] for i in members]))
        for j, i in enumerate(members):
            out[i] = converted[j]
    return out


def _to_host(images: list[torch.Tensor]) -> list[np.ndarray]:
    """Copy drawn frames to host memory, one transfer per size; from a GPU only queued (the caller
    synchronizes before handing them on)."""
    if images[0].device.type == "cpu":
        return [t.numpy() for t in images]
    copies = _in_groups(images, [t.shape for t in images], lambda _, batch: download(batch, wait=False))
    return [t.numpy() for t in copies]


def _warn_unless_finite(class_logits: torch.Tensor) -> None:
    """Say so when the model's first outputs hold NaN or infinity (damaged or wrongly cast weights): such
    a model finds nothing, which would otherwise look like an empty scene. One host sync, once a run."""
    if not bool(torch.isfinite(class_logits).all()):
        log.warning("the model's outputs are not finite (NaN or infinity): its weights may be damaged or not "
                    "fit for this dtype; it will find no segment")


def wanted_classes(classes: Sequence[str], id2label: dict[int, str]) -> frozenset[int] | None:
    """The label ids that ``classes`` (names or ids) name, or None to keep every class.

    Raises:
        ConfigError: naming a class the model does not have, and the classes it has.
    """
    if not classes:
        return None
    by_name = {name.lower(): label_id for label_id, name in id2label.items()}
    wanted = set()
    for given in classes:
        label_id = int(given) if str(given).isdigit() else by_name.get(str(given).lower())
        if label_id is None or label_id not in id2label:
            known = ", ".join(f"{k}: {v}" for k, v in sorted(id2label.items())[:40])
            raise ConfigError(f"postprocess.classes: this model has no class {given!r} (it has {known}"
                              f"{', ...' if len(id2label) > 40 else ''})")
        wanted.add(label_id)
    return frozenset(wanted)
