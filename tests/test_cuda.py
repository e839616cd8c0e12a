"""Checks that need an NVIDIA GPU; skipped elsewhere. Run on a lent GPU by benchmarks/gpu_check.sh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import streamseg
from streamseg.inference.postprocess import instance, panoptic, semantic
from streamseg.inference.preprocess import resize_uint8

from .conftest import SAMPLE_CLIP, SAMPLE_MODEL, read_video

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _logits(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(3, 20, 8, generator=g) * 3
    masks = torch.randn(3, 20, 48, 64, generator=g) * 4
    return cls, masks


def _tiling_masks() -> torch.Tensor:
    """Mask logits that tile the frame, one query a tile, so panoptic keeps segments (random masks
    overlap too much for it)."""
    owner = torch.randint(0, 20, (3, 1, 6, 8), generator=torch.Generator().manual_seed(3)).float()
    owner = torch.nn.functional.interpolate(owner, size=(48, 64), mode="nearest")
    return torch.where(owner == torch.arange(20).view(1, 20, 1, 1), 8.0, -8.0)


def _pairs(seg) -> list[tuple[int, bytes]]:
    return sorted((lab, m.cpu().numpy().tobytes()) for lab, m in zip(seg.label_ids, seg.masks))


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_postprocess_on_cuda_matches_cpu(task: str) -> None:
    cls, masks = _logits()
    sizes = [(181, 243), (181, 243), (95, 130)]
    fn = {"semantic": semantic, "instance": instance, "panoptic": panoptic}[task]
    kwargs = {} if task == "semantic" else {"threshold": 0.2}
    cpu = fn(cls, masks, sizes, **kwargs)
    gpu = fn(cls.cuda(), masks.cuda(), sizes, **kwargs)
    for a, b in zip(cpu, gpu):
        if task == "semantic":
            assert (a.label_map() == b.label_map().cpu()).float().mean() >= 0.999
        else:
            assert len(a) == len(b)
            matches = sum(pa == pb for pa, pb in zip(_pairs(a), _pairs(b)))
            assert matches >= len(a) - 1  # a pixel on a float tie may differ


def test_float_resize_on_cuda_is_within_one_level_of_cpu() -> None:
    x = torch.from_numpy((np.random.default_rng(0).random((2, 3, 360, 640)) * 255).astype(np.uint8))
    cpu = resize_uint8(x, (384, 384)).int()
    gpu = resize_uint8(x.cuda(), (384, 384)).cpu().int()
    assert (cpu - gpu).abs().max() <= 1


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_pipeline_on_cuda_agrees_with_cpu(tmp_path: Path, dtype: str) -> None:
    kwargs = dict(model=str(SAMPLE_MODEL), task="semantic")
    cpu = [r.segmentation.label_map() for _, r in zip(range(16), streamseg.segment(SAMPLE_CLIP, device="cpu", **kwargs))]
    gpu = [r.segmentation.label_map() for _, r in zip(range(16), streamseg.segment(
        SAMPLE_CLIP, device="cuda", dtype=dtype, output=tmp_path / "o.mp4", **kwargs))]
    agree = np.mean([(a == b).float().mean().item() for a, b in zip(cpu, gpu)])
    assert agree >= 0.99
    # Results reach the caller once written, so the video holds the 16 taken and any written meanwhile.
    assert 16 <= len(read_video(tmp_path / "o.mp4")[2]) < 300


def test_auto_codec_uses_nvenc_on_gpu(tmp_path: Path) -> None:
    from streamseg.sinks.video import encoder_opens, pick_encoder

    if not encoder_opens("h264_nvenc"):
        pytest.skip("this GPU's driver has no NVENC for PyAV")
    assert pick_encoder("auto", accelerated=True) == "h264_nvenc"
    out = tmp_path / "o.mp4"
    model = str(SAMPLE_MODEL)
    results = list(streamseg.segment(SAMPLE_CLIP, model=model, device="cuda", output=out, output__codec="auto"))
    assert len(read_video(out)[2]) == len(results) == 300


def test_files_decode_on_nvdec(tmp_path: Path, caplog) -> None:
    import logging

    from streamseg.sources import read_frames

    with caplog.at_level(logging.INFO):
        frames = list(read_frames(SAMPLE_CLIP, hwaccel="cuda"))
    assert len(frames) == 300
    assert "hardware decoding unavailable" not in caplog.text


def test_streams_decode_on_nvdec(caplog) -> None:
    import logging

    from streamseg.sources import read_frames
    from streamseg.sources.live import read_stream

    with caplog.at_level(logging.INFO):
        frames = read_stream(str(SAMPLE_CLIP), hwaccel="cuda")()
        first = [next(frames)[0] for _ in range(10)]
        frames.close()
    assert "hardware decoding unavailable" not in caplog.text
    software = [f.image for _, f in zip(range(10), read_frames(SAMPLE_CLIP))]
    assert all(np.array_equal(a, b) for a, b in zip(first, software))  # H.264 decoding is bit-exact


def test_drawing_on_cuda_matches_cpu() -> None:
    from streamseg.annotators import MaskAnnotator

    cls, masks = _logits(1)[0], _tiling_masks()
    sizes = [(181, 243)] * 3
    scenes = torch.randint(0, 256, (3, 181, 243, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    annotator = MaskAnnotator(opacity=0.4)
    for task in ("panoptic", "instance"):
        fn = panoptic if task == "panoptic" else instance
        cpu = fn(cls, masks, sizes, threshold=0.2)
        gpu = fn(cls.cuda(), masks.cuda(), sizes, threshold=0.2)
        # On the GPU the batch is measured and drawn at once, on the CPU frame by frame.
        drawn_gpu = annotator.annotate_batch(list(scenes.cuda()), gpu)
        compared = 0
        for scene, a, b, drawn in zip(scenes, cpu, gpu, drawn_gpu):
            if not torch.equal(a.index_map(), b.index_map().cpu()):
                continue  # a float tie in post-processing: not what this test is about
            assert (a.areas, a.boxes) == (b.areas, b.boxes)
            drawn_cpu = annotator.annotate(scene, a)
            assert (drawn_cpu.int() - drawn.cpu().int()).abs().max() <= 1
            compared += len(a)
        assert compared > 0


def test_color_conversion_on_cuda_matches_cpu() -> None:
    from streamseg.inference.color import rgb_to_yuv420, yuv420_to_rgb

    g = torch.Generator().manual_seed(2)
    planes = torch.randint(0, 256, (2, 270, 320), dtype=torch.uint8, generator=g)
    for pixel_format in ("yuv420p", "nv12"):
        for matrix in ("bt601", "bt709"):
            cpu = yuv420_to_rgb(planes, pixel_format, matrix)
            gpu = yuv420_to_rgb(planes.cuda(), pixel_format, matrix).cpu()
            assert (cpu.int() - gpu.int()).abs().max() <= 1  # a float exactly on an integer may floor apart
    rgb = torch.randint(0, 256, (2, 180, 320, 3), dtype=torch.uint8, generator=g)
    assert (rgb_to_yuv420(rgb).int() - rgb_to_yuv420(rgb.cuda()).cpu().int()).abs().max() <= 1


def test_graphed_forward_matches_the_model(tiny_model_fixed: Path, monkeypatch) -> None:
    """Replayed from CUDA graphs (batches padded to 1, 2, 4 or 8), the model computes what it computes
    launched kernel by kernel, for fresh inputs on every call."""
    from transformers import Mask2FormerForUniversalSegmentation

    from streamseg.inference.graphs import graphed_forward

    model = Mask2FormerForUniversalSegmentation.from_pretrained(tiny_model_fixed).cuda().eval()
    graphed = graphed_forward(model, 8)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # float32 compared as float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with torch.inference_mode():
        for count in (3, 8, 1, 3, 8):
            pixels = torch.randn(count, 3, 128, 128, device="cuda")
            got = graphed(pixels)
            want = model(pixel_values=pixels)
            torch.testing.assert_close(got[0], want.class_queries_logits, atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(got[1], want.masks_queries_logits, atol=2e-3, rtol=2e-3)
    assert graphed.failed is None
    assert sorted(key[0] for key in graphed._graphs) == [1, 4, 8]
    full = graphed_forward(model, 8, max_graphs=1)  # a second input shape runs without a graph
    with torch.inference_mode():
        for size in (128, 96, 128):
            pixels = torch.randn(2, 3, size, size, device="cuda")
            torch.testing.assert_close(full(pixels)[1], model(pixel_values=pixels).masks_queries_logits,
                                       atol=2e-3, rtol=2e-3)
    assert [key[1:3] for key in full._graphs] == [(3, 128)]


def test_a_forward_pass_that_waits_on_the_device_runs_without_graphs(caplog) -> None:
    import logging
    from types import SimpleNamespace

    from streamseg.inference.graphs import graphed_forward

    class Waits(torch.nn.Module):
        def forward(self, pixel_values):
            scale = pixel_values.abs().max().item()  # a copy to the host: cannot be captured
            return SimpleNamespace(class_queries_logits=pixel_values.mean((2, 3)),
                                   masks_queries_logits=pixel_values / scale,
                                   transformer_decoder_last_hidden_state=pixel_values.mean(3))

    graphed = graphed_forward(Waits(), 4)
    pixels = torch.randn(2, 3, 8, 8, device="cuda")
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        class_logits, mask_logits, _ = graphed(pixels)
        again = graphed(pixels * 2)
    assert graphed.failed and "CUDA graphs unavailable" in caplog.text
    torch.testing.assert_close(mask_logits, pixels / pixels.abs().max())
    torch.testing.assert_close(again[0], (pixels * 2).mean((2, 3)))


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
def test_pipeline_with_cuda_graphs_agrees_without(tmp_path: Path) -> None:
    """300 frames in batches of 8: the last one, and any the batcher sends early, are padded."""
    runs = {}
    for graphs in (True, False):
        results = streamseg.segment(SAMPLE_CLIP, model=str(SAMPLE_MODEL), task="panoptic", device="cuda",
                                    batch_size=8, model__cuda_graphs=graphs)
        runs[graphs] = [r.segmentation.label_map() for r in results]
    assert len(runs[True]) == len(runs[False]) == 300
    agree = np.mean([(a == b).float().mean().item() for a, b in zip(runs[True], runs[False])])
    assert agree >= 0.995


def test_nvdec_frames_kept_on_the_gpu_are_the_ones_it_copies_out(tmp_path: Path, caplog) -> None:
    """``gpu_frames``: each NV12 frame read through DLPack on the GPU is, byte for byte, what NVDEC hands
    the host (a frame read before NVDEC's copy finished, or after its buffer went back to FFmpeg's
    pool, would differ). A rotated video's frames are copied out and turned upright in RGB, as without.
    Read on a thread of its own after torch has started CUDA, as a pipeline's source does."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from streamseg.sources import read_frames

    from .conftest import write_clip

    torch.zeros(1, device="cuda")
    with caplog.at_level(logging.INFO), ThreadPoolExecutor(1) as pool:
        on_gpu = pool.submit(lambda: list(read_frames(SAMPLE_CLIP, hwaccel="cuda", yuv=True, gpu_frames=True))).result()
    assert "hardware decoding unavailable" not in caplog.text
    on_host = list(read_frames(SAMPLE_CLIP, hwaccel="cuda", yuv=True))
    assert len(on_gpu) == len(on_host) == 300
    assert all(isinstance(f.pixels, torch.Tensor) and f.pixels.is_cuda and f.pixel_format == "nv12" for f in on_gpu)
    assert all(np.array_equal(a.pixels.cpu().numpy(), b.pixels) for a, b in zip(on_gpu, on_host))
    assert [f.matrix for f in on_gpu] == [f.matrix for f in on_host]
    phone = write_clip(tmp_path / "phone.mp4", width=96, height=64, frames=6, display_rotation=90)
    turned = list(read_frames(phone, hwaccel="cuda", yuv=True, gpu_frames=True))
    expected = list(read_frames(phone, hwaccel="cuda", yuv=True))
    assert all(f.pixel_format == "rgb24" and f.image.shape == (96, 64, 3) for f in turned)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(turned, expected))


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model not built")
def test_pipeline_with_gpu_frames_agrees_without(tmp_path: Path, caplog) -> None:
    import logging

    runs = {}
    for keep in (True, False):
        results = streamseg.segment(SAMPLE_CLIP, model=str(SAMPLE_MODEL), task="panoptic", device="cuda",
                                    batch_size=8, gpu_frames=keep, output=tmp_path / f"{keep}.mp4")
        with caplog.at_level(logging.INFO):
            runs[keep] = [(r.segmentation.label_map(), r.frame.image) for r in results]
    assert "hardware decoding unavailable" not in caplog.text  # NVDEC decoded both, not the CPU
    assert len(runs[True]) == len(runs[False]) == 300
    agree = np.mean([(a[0] == b[0]).float().mean().item() for a, b in zip(runs[True], runs[False])])
    assert agree >= 0.999
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(runs[True], runs[False]))  # the frames themselves
    assert len(read_video(tmp_path / "True.mp4")[2]) == 300


def test_frames_go_up_through_pinned_memory_unchanged() -> None:
    """Two sizes in one batch, host frames beside one already on the GPU, through the runner's upload."""
    from streamseg.inference.runner import _through_pinned, upload_together

    rng = np.random.default_rng(1)
    host = [torch.from_numpy(rng.integers(0, 255, (540, 640), dtype=np.uint8)) for _ in range(3)]
    host += [torch.from_numpy(rng.integers(0, 255, (270, 320), dtype=np.uint8)) for _ in range(2)]
    frames = [host[0], host[3], host[1], host[0].cuda(), host[2], host[4]]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = upload_together(frames, lambda parts: _through_pinned(parts, torch.device("cuda")))
    stream.synchronize()
    assert got[3] is frames[3]
    assert all(g.is_cuda and torch.equal(g.cpu(), f.cpu()) for g, f in zip(got, frames))


def test_copies_queued_into_pinned_memory_are_the_blocking_ones() -> None:
    from streamseg.ops import download
    from streamseg.types import column_major

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        maps = column_major(torch.randint(0, 9, (4, 720, 1280), dtype=torch.int32, device="cuda"))
        queued = download(maps * 3, wait=False)  # computed on this stream, copied without waiting
    stream.synchronize()
    assert queued.is_pinned() and queued.stride() == maps.stride()
    assert torch.equal(queued, (maps * 3).cpu())


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_a_batch_copied_to_the_host_together_is_each_frame_copied_alone(task: str) -> None:
    from streamseg.types import to_host

    cls, masks = _logits(1)[0], _tiling_masks()
    sizes = [(181, 243), (90, 120), (181, 243)]
    segs = (panoptic if task == "panoptic" else instance)(cls.cuda(), masks.cuda(), sizes, threshold=0.1)
    assert all(len(seg) for seg in segs)
    together = to_host(segs, wait=False)
    torch.cuda.synchronize()
    for seg, host in zip(segs, together):
        alone = seg.cpu()
        for a, b in ((alone.segment_map, host.segment_map), (alone.mask_stack, host.mask_stack)):
            assert (a is None) == (b is None)
            if a is not None:
                assert b.device.type == "cpu" and b.stride() == a.stride() and torch.equal(a, b)


def test_the_forward_pass_runs_off_the_default_stream() -> None:
    """FFmpeg decodes on CUDA's default stream and waits for it on every frame it copies to the host:
    the model must not queue its work there."""
    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.sources import read_frames

    loaded = load_model(str(SAMPLE_MODEL), device="cuda")
    streams = []
    loaded.model.register_forward_hook(lambda *_: streams.append(torch.cuda.current_stream()))
    runner = ModelRunner(loaded, "semantic", PostprocessConfig(), cuda_graphs=False)
    results = runner([f for _, f in zip(range(2), read_frames(SAMPLE_CLIP, hwaccel="cuda", yuv=True))])
    assert len(results) == 2 and streams
    assert all(s != torch.cuda.default_stream() for s in streams)


@pytest.mark.parametrize("whole", [True, False])
def test_queueing_a_batch_never_waits_for_the_device(whole: bool) -> None:
    """The infer thread's half (upload, YUV to RGB, preprocessing, the graph's replay) only queues work,
    whether the graph holds all of it or the model alone. A wait there holds the next batch back until
    the GPU has finished the last one, and the GPU then idles while the next is queued: a tensor made
    per batch from Python numbers did that."""
    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.sources import read_frames

    loaded = load_model(str(SAMPLE_MODEL), device="cuda")
    runner = ModelRunner(loaded, "panoptic", PostprocessConfig(), cuda_graphs=True, batch_size=4)
    if not whole:
        runner._whole = None  # as for a batch of mixed frames: colours and preprocessing launched one by one
    frames = [f for _, f in zip(range(8), read_frames(SAMPLE_CLIP, yuv=True))]  # YUV in host memory
    assert frames[0].pixel_format == "yuv420p"
    runner.finish(runner.forward(frames[:4]))  # captures the graph, fills the caches
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = runner.forward(frames[4:])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(runner.finish(batch)) == 4


@pytest.mark.parametrize("yuv", [True, False])
def test_preprocessing_is_replayed_with_the_model(yuv: bool, monkeypatch) -> None:
    """Frames of one kind go through one graph (colour conversion, preprocessing, forward pass): the
    same images and logits as the same steps launched one by one, for full and padded batches."""
    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.sources import read_frames

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # float32 compared as float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    loaded = load_model(str(SAMPLE_MODEL), device="cuda", dtype="float32")
    graphed = ModelRunner(loaded, "panoptic", PostprocessConfig(), cuda_graphs=True, batch_size=4)
    plain = ModelRunner(loaded, "panoptic", PostprocessConfig(), cuda_graphs=False, batch_size=4)
    frames = [f for _, f in zip(range(11), read_frames(SAMPLE_CLIP, yuv=yuv))]
    for batch in (frames[:4], frames[4:7], frames[7:11], frames[:1]):
        got, want = graphed.forward(batch), plain.forward(batch)
        assert all(torch.equal(a, b) for a, b in zip(got.images, want.images))
        torch.testing.assert_close(got.class_logits, want.class_logits, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(got.mask_logits, want.mask_logits, atol=2e-3, rtol=2e-3)
        assert len(graphed.finish(got)) == len(batch)
    (whole,) = graphed._whole.values()
    assert whole.failed is None and sorted(key[0] for key in whole._graphs) == [1, 4]
