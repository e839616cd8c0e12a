"""Threads, queues and errors of the pipeline."""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from pathlib import Path

import pytest

import streamseg
from streamseg import ModelError, Pipeline, SinkError, load_config
from streamseg.types import FrameResult

from .conftest import ThreadProbe, read_video, write_clip


def _streamseg_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("streamseg-")]


def _config(src: Path, model: Path, **overrides) -> streamseg.Config:
    return load_config(None, sources=(str(src),), model__name=str(model), **overrides)


class FailingSink:
    def __init__(self, after: int, slow: float = 0.0) -> None:
        self.after = after
        self.slow = slow  # seconds the failing write takes: the stages before it fill their queues meanwhile
        self.written = 0
        self.closed = False

    def write(self, result: FrameResult) -> None:
        if self.written == self.after:
            time.sleep(self.slow)
            raise SinkError("disk full (test)")
        self.written += 1

    def close(self) -> None:
        self.closed = True


def test_results_come_in_order_and_threads_end(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=11)
    results = list(streamseg.segment(src, model=str(tiny_model), batch_size=4))
    assert [r.index for r in results] == list(range(11))  # 11 = two full batches and a short one
    assert all(r.segmentation.masks.device.type == "cpu" for r in results)
    assert not _streamseg_threads()


def test_annotate_draws_every_result_for_the_caller(tmp_path: Path) -> None:
    """Without an output that draws, ``annotated`` is None unless asked for; asked for, it is the frame
    with its segments drawn, as RGB, the same drawing as the video output's."""
    from .conftest import SAMPLE_CLIP, SAMPLE_MODEL

    def first(n: int, **kwargs) -> list[FrameResult]:
        return list(itertools.islice(streamseg.segment(SAMPLE_CLIP, model=str(SAMPLE_MODEL), **kwargs), n))

    assert all(r.annotated is None for r in first(2))
    drawn = first(4, annotate=True)
    assert all(r.segmentation.labels for r in drawn)  # the sample model finds the scene's shapes
    for r in drawn:
        assert r.drawn_format == "rgb24" and r.annotated.shape == r.frame.image.shape
        assert (r.annotated != r.frame.image).any()
    with_output = first(4, output=tmp_path / "o.mp4")
    assert all((a.annotated == b.annotated).all() for a, b in zip(with_output, drawn))


def test_sink_failure_reaches_the_caller_and_outputs_are_closed(tmp_path: Path, tiny_model: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The failure ends the run at once: the stages that were still passing results on (more than the
    queues hold) stop without them, where they used to wait out the threads' join timeout, and stay."""
    src = write_clip(tmp_path / "in.mp4", frames=120)
    out = tmp_path / "o.mp4"
    sink = FailingSink(after=5, slow=2.0)
    with pytest.raises(SinkError, match="disk full"):
        with Pipeline(_config(src, tiny_model, output__video=str(out), batching__batch_size=2),
                      sinks=[sink]) as pipeline:
            pipeline.run(handle_interrupt=False)
    assert sink.closed
    assert len(read_video(out)[2]) >= 5  # what was written before the failure still plays
    assert not _streamseg_threads()
    assert "did not stop" not in caplog.text


def test_inference_failure_reaches_the_caller(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=20)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access (test)")

    monkeypatch.setattr("streamseg.inference.runner.preprocess", broken)
    with pytest.raises(ModelError, match="inference failed: CUDA error"):
        list(streamseg.segment(src, model=str(tiny_model)))
    assert not _streamseg_threads()


def test_breaking_out_early_stops_every_thread(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=60)
    out = tmp_path / "o.mp4"
    gen = streamseg.segment(src, model=str(tiny_model), output=out, batch_size=2)
    for r in gen:
        if r.index == 3:
            break
    gen.close()
    deadline = time.monotonic() + 10
    while _streamseg_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _streamseg_threads()
    assert len(read_video(out)[2]) >= 4


def test_a_pipeline_runs_once(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=3)
    pipeline = Pipeline(_config(src, tiny_model, output__masks=str(tmp_path / "m.jsonl")))
    summary = pipeline.run(handle_interrupt=False)
    assert summary.frames == 3 and not summary.interrupted
    with pytest.raises(RuntimeError, match="runs once"):
        pipeline.start()


def test_stop_finishes_outputs_with_frames_done(tmp_path: Path, tiny_model: Path) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=200)
    out = tmp_path / "o.mp4"
    seen = []
    with Pipeline(_config(src, tiny_model, output__video=str(out), batching__batch_size=1)) as pipeline:
        for r in pipeline.results():
            seen.append(r.index)
            if len(seen) == 5:
                pipeline.stop()
    assert 5 <= len(seen) < 200
    assert len(read_video(out)[2]) == len(seen)


def test_a_file_loses_no_frame_when_the_model_is_slower_than_decoding(tmp_path: Path, tiny_model: Path) -> None:
    """The producer finishes long before the consumer; its end marker must wait, not evict a frame."""
    src = write_clip(tmp_path / "in.mp4", frames=12)
    cfg = _config(src, tiny_model, batching__batch_size=1, batching__queue_size=2)
    with Pipeline(cfg) as pipeline:
        indices = []
        for r in pipeline.results():
            indices.append(r.index)
            time.sleep(0.15)  # longer than a queue wait: every queue stays full
    assert indices == list(range(12))


def test_thread_tuner_keeps_the_faster_setting() -> None:
    from streamseg.inference.threads import ThreadTuner

    # Seconds a batch on one core (every core: 1.0), the choice, and batches on trial with one core.
    for one_core_s, expected, on_trial in ((0.5, 1, 4), (0.97, 4, 4), (1.1, 4, 4), (1.5, 4, 2)):
        tuner = ThreadTuner(4, trial=3, every=10, warmup=2)
        now, used = 0.0, []
        tuner.tick(now)
        for _ in range(2 + 4 + on_trial + 10):
            used.append(tuner.threads)
            now += one_core_s if tuner.threads == 1 else 1.0
            tuner.tick(now)
        # Warm-up, then each setting on trial; one clearly slower batch ends the trial of one core.
        assert used[: 2 + 4] == [4] * 6 and used[6 : 6 + on_trial] == [1] * on_trial
        assert used[6 + on_trial :] == [expected] * 10
        assert tuner.threads == 4  # and then both are tried again


def test_torch_threads_are_per_thread_and_restored(tmp_path: Path, tiny_model: Path) -> None:
    import threading

    import torch

    from streamseg.inference.threads import set_torch_threads

    before = torch.get_num_threads()
    seen = {}

    def worker(name: str, count: int, ready: threading.Barrier) -> None:
        set_torch_threads(count)
        ready.wait()  # both have set their count before either reads it
        seen[name] = torch.get_num_threads()

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=worker, args=(n, c, ready)) for n, c in (("a", 1), ("b", 3))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert seen == {"a": 1, "b": 3}
    torch.set_num_threads(before)

    list(streamseg.segment(write_clip(tmp_path / "c.mp4", frames=6), model=str(tiny_model), device="cpu"))
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own niceness is Linux's")
def test_a_cpu_run_over_files_gives_the_forward_pass_the_cores(tmp_path: Path, tiny_model: Path) -> None:
    """The other stages' threads take one torch thread and the lowest priority, so that they run while the
    forward pass waits for them; the forward pass's thread keeps the caller's priority; the caller's thread
    takes one torch thread (no second OpenMP team) until the run ends (see inference.threads)."""
    import torch

    before, mine = torch.get_num_threads(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    probe = ThreadProbe()
    with Pipeline(_config(write_clip(tmp_path / "c.mp4", frames=6), tiny_model, model__device="cpu"),
                  sinks=[probe]) as pipeline:
        infer = next(t for t in _streamseg_threads() if t.name == "streamseg-infer")
        assert os.getpriority(os.PRIO_PROCESS, infer.native_id) == mine
        during = torch.get_num_threads()
        pipeline.run(handle_interrupt=False)
    assert probe.seen == {(19, 1)}
    assert during == 1 and torch.get_num_threads() == before


def test_a_pipeline_that_fails_to_start_gives_the_caller_its_threads_back(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    with pytest.raises(ModelError), Pipeline(_config(write_clip(tmp_path / "c.mp4", frames=2), tmp_path / "none",
                                                     model__device="cpu")):
        pass
    assert torch.get_num_threads() == before


def test_forward_passes_shrink_when_the_device_runs_out_of_memory(tmp_path: Path, tiny_model: Path,
                                                                 caplog) -> None:
    """No CUDA here: the model raises torch's own out-of-memory error above 2 frames, as a GPU would."""
    import logging

    import torch

    from streamseg.config import PostprocessConfig
    from streamseg.inference.loading import load_model
    from streamseg.inference.runner import ModelRunner
    from streamseg.sources import read_frames

    frames = list(read_frames(write_clip(tmp_path / "c.mp4", frames=7)))
    loaded = load_model(str(tiny_model), device="cpu")
    expected = [r.segmentation.label_map() for r in ModelRunner(loaded, "semantic", PostprocessConfig())(frames)]

    runner = ModelRunner(loaded, "semantic", PostprocessConfig())
    model, sizes = runner._forward, []

    def small_device(pixel_values: torch.Tensor):
        sizes.append(len(pixel_values))
        if len(pixel_values) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(pixel_values=pixel_values)

    runner._forward = lambda pixel_values: small_device(pixel_values)
    with caplog.at_level(logging.WARNING):
        got = [r.segmentation.label_map() for b in (frames[:4], frames[4:]) for r in runner(b)]
    assert sizes == [4, 2, 2, 2, 1]  # halved once, then kept at 2
    assert runner.max_batch == 2
    assert caplog.text.count("out of device memory") == 1
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_a_batch_of_frames_goes_up_once_a_size() -> None:
    """Frames of two sources (two sizes) interleaved in a batch: one transfer a size, each frame back in
    its place, as it was."""
    import torch

    from streamseg.inference.runner import upload_together

    sizes = [(54, 64), (36, 48), (54, 64), (54, 64), (36, 48)]
    frames = [torch.randint(0, 255, size, dtype=torch.uint8) for size in sizes]
    sent = []

    def send(parts: list[torch.Tensor]) -> torch.Tensor:
        sent.append(len(parts))
        return torch.stack(parts) + 1  # a copy, as a transfer makes

    got = upload_together(frames, send)
    assert sent == [3, 2]
    assert all(torch.equal(g, f + 1) for g, f in zip(got, frames))


def test_channels_last_gives_the_same_segments(tmp_path: Path) -> None:
    from .conftest import SAMPLE_CLIP, SAMPLE_MODEL

    kwargs = dict(model=str(SAMPLE_MODEL), task="semantic", device="cpu")
    plain = [r.segmentation.label_map() for _, r in zip(range(4), streamseg.segment(SAMPLE_CLIP, **kwargs))]
    nhwc = [r.segmentation.label_map() for _, r in zip(range(4), streamseg.segment(
        SAMPLE_CLIP, model__channels_last=True, **kwargs))]
    assert all((a == b).float().mean().item() >= 0.999 for a, b in zip(plain, nhwc))


def test_several_files_each_get_their_own_outputs(tmp_path: Path, tiny_model: Path) -> None:
    """``-o out.mp4`` with several files: ``out-street.mp4``, not ``out-street.mp4.mp4``; names that would
    then clash keep the whole file name."""
    sources = [write_clip(tmp_path / "street.mp4", frames=3), write_clip(tmp_path / "park.mkv", frames=4),
               write_clip(tmp_path / "park.mp4", frames=5)]
    cfg = load_config(None, sources=tuple(map(str, sources)), model__name=str(tiny_model),
                      output__video=str(tmp_path / "out.mp4"), output__masks=str(tmp_path / "m.jsonl"))
    with Pipeline(cfg) as pipeline:
        pipeline.run(handle_interrupt=False)
    expected = {"out-street.mp4": 3, "out-park.mkv.mp4": 4, "out-park.mp4.mp4": 5}
    assert {name: len(read_video(tmp_path / name)[2]) for name in expected} == expected
    assert sorted(p.name for p in tmp_path.glob("m-*.jsonl")) == ["m-park.mkv.jsonl", "m-park.mp4.jsonl",
                                                                  "m-street.jsonl"]


def test_segment_time_on_a_file_says_it_does_nothing_there(tmp_path: Path, tiny_model: Path, caplog) -> None:
    src = write_clip(tmp_path / "in.mp4", frames=3)
    cfg = _config(src, tiny_model, output__video=str(tmp_path / "o.mp4"), output__segment_time=2.0)
    with Pipeline(cfg) as pipeline:
        pipeline.run(handle_interrupt=False)
    assert "splits live recordings only" in caplog.text
    assert len(read_video(tmp_path / "o.mp4")[2]) == 3


class HandshakeSink:
    """Each write waits for the other sink's write of the same frame: it can only finish if the two
    outputs are written side by side, not one after the other."""

    def __init__(self, mine: dict[int, threading.Event], theirs: dict[int, threading.Event]) -> None:
        self.mine, self.theirs = mine, theirs
        self.written: list[int] = []
        self.closed = False

    def write(self, result: FrameResult) -> None:
        self.mine.setdefault(result.index, threading.Event()).set()
        if not self.theirs.setdefault(result.index, threading.Event()).wait(timeout=20):
            raise SinkError(f"frame {result.index}: the other output is not being written at the same time")
        self.written.append(result.index)

    def close(self) -> None:
        self.closed = True


def test_outputs_are_written_side_by_side_and_results_follow(tmp_path: Path, tiny_model: Path) -> None:
    """Each output has its own thread (a video, the masks and a preview need not wait for each other),
    and a result reaches the caller only once every output has written it."""
    src = write_clip(tmp_path / "in.mp4", frames=12)
    a_events: dict[int, threading.Event] = {}
    b_events: dict[int, threading.Event] = {}
    a, b = HandshakeSink(a_events, b_events), HandshakeSink(b_events, a_events)
    seen = []
    with Pipeline(_config(src, tiny_model, batching__batch_size=4), sinks=[a, b]) as pipeline:
        for result in pipeline.results():
            assert result.index in a.written and result.index in b.written
            seen.append(result.index)
    assert seen == a.written == b.written == list(range(12))
    assert a.closed and b.closed
    assert not _streamseg_threads()


def test_download_keeps_the_layout_and_values() -> None:
    """On the CPU a download is the tensor itself; a column-major map keeps its strides either way."""
    import torch

    from streamseg.ops import download
    from streamseg.types import column_major

    segment_map = column_major(torch.arange(12, dtype=torch.int32).view(3, 4))
    for wait in (True, False):
        host = download(segment_map, wait=wait)
        assert host.stride() == segment_map.stride() == (1, 3) and torch.equal(host, segment_map)
