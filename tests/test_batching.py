"""The batcher's choices, on real queues fed the way producer threads feed them."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from streamseg.runtime.batcher import Batcher, produce
from streamseg.runtime.channels import EndOfStream, Failure, offer_newest
from streamseg.types import Frame

PIXELS = np.zeros((2, 2, 3), np.uint8)


def frame(source: str, index: int) -> Frame:
    return Frame(PIXELS, index, index, Fraction(1, 25), index / 25, source=source)


def filled(source: str, count: int, *, end: bool = True) -> queue.Queue:
    """A file's queue as its producer leaves it when the consumer is slower: full, in order."""
    q: queue.Queue = queue.Queue()
    for i in range(count):
        q.put(frame(source, i))
    if end:
        q.put(EndOfStream(source))
    return q


def batches(batcher: Batcher) -> list[list[tuple[str, int]]]:
    out = []
    while (batch := batcher.next_batch(threading.Event())) is not None:
        out.append([(f.source, f.index) for f in batch])
    return out


def test_files_fill_batches_in_turn_and_keep_their_order() -> None:
    batcher = Batcher({"a": filled("a", 5), "b": filled("b", 2)}, 4, 0.01, threading.Event())
    got = batches(batcher)
    assert [len(b) for b in got] == [4, 3]  # the last batch is short: every source has ended
    for name, count in (("a", 5), ("b", 2)):
        assert [i for b in got for s, i in b if s == name] == list(range(count))
    assert {("b", 0), ("b", 1)} <= set(got[0])  # b is not left to wait behind all of a


def test_a_file_beside_a_camera_gets_one_frame_a_batch_not_the_rest_of_it() -> None:
    """A camera's frame is always waiting (it keeps its newest), and so is the file: each batch takes
    one of each. Before, the file filled the other three slots of every batch, and the camera, which
    loses what waits, got a quarter of the model's frames (8.6 fps of its 25 beside a file, against
    16.6 after, in `streamseg segment FILE rtsp://...` on this machine)."""
    camera: queue.Queue = queue.Queue(maxsize=1)
    file = filled("file", 6)
    batcher = Batcher({"file": file, "cam": camera}, 4, 0.01, threading.Event(), live=frozenset({"cam"}))
    got = []
    for i in range(3):
        offer_newest(camera, frame("cam", i))
        got.append(sorted(f.source for f in batcher.next_batch(threading.Event())))
    assert got == [["cam", "file"]] * 3


def test_cameras_share_batches_evenly_beside_one_that_has_nothing() -> None:
    """Each round starts after the last source to give a frame. Before, the turn moved on by one a round
    whatever was taken, and with a stalled camera among four in batches of two, the camera after it got
    about two thirds of the others' share (11.2-11.4 fps against 15.2-17.2, three 25 fps RTSP cameras
    and a 2 fps one; 13.8-14.6 each now)."""
    cams = {name: queue.Queue(maxsize=1) for name in "abcd"}
    batcher = Batcher(cams, 2, 0.001, threading.Event(), live=frozenset(cams))
    taken = dict.fromkeys("abcd", 0)
    for i in range(30):
        for name in "abc":  # d has nothing to give
            offer_newest(cams[name], frame(name, i))
        for f in batcher.next_batch(threading.Event()):
            taken[f.source] += 1
    assert taken == {"a": 20, "b": 20, "c": 20, "d": 0}


def test_a_file_fills_the_batch_while_the_camera_has_nothing() -> None:
    """A camera that is reconnecting (its queue empty) does not hold the file to one frame a batch."""
    camera: queue.Queue = queue.Queue(maxsize=1)
    batcher = Batcher({"file": filled("file", 8), "cam": camera}, 4, 0.01, threading.Event(),
                      live=frozenset({"cam"}))
    assert [f.source for f in batcher.next_batch(threading.Event())] == ["file"] * 4


def test_cameras_give_their_newest_frame_once_a_batch() -> None:
    cams = {name: queue.Queue(maxsize=1) for name in ("a", "b")}
    for i in range(3):  # three frames came while the model was busy: only the newest is left
        offer_newest(cams["a"], frame("a", i))
    offer_newest(cams["b"], frame("b", 0))
    batcher = Batcher(cams, 8, 1.0, threading.Event(), live=frozenset(cams))
    batch = batcher.next_batch(threading.Event())  # handed over at once: every camera gave its frame
    assert sorted((f.source, f.index, f.dropped) for f in batch) == [("a", 2, 2), ("b", 0, 0)]


def test_a_camera_not_due_does_not_hold_a_batch_but_one_due_is_waited_for() -> None:
    """A 2 fps camera beside a 25 fps one held each batch for max_wait (20 ms by default): the fast
    camera's latency p50 went from 26 to 79 ms and its output from 25 to 21.8 fps on this machine. Now
    a batch waits only for a camera whose next frame is due before the wait ends, at its pace so far."""
    fast, slow = queue.Queue(maxsize=1), queue.Queue(maxsize=1)
    batcher = Batcher({"fast": fast, "slow": slow}, 4, 30.0, threading.Event(), live=frozenset({"fast", "slow"}))
    now = time.monotonic()

    def batch_with_slow(captured: float, after_s: float = 0.0) -> list[str]:
        offer_newest(fast, frame("fast", 0))
        late = threading.Timer(after_s, offer_newest, (slow, dataclasses.replace(frame("slow", 0), captured=captured)))
        late.start()
        sources = sorted(f.source for f in batcher.next_batch(threading.Event()))
        late.join()
        return sources

    assert batch_with_slow(now - 2.0) == ["fast", "slow"]
    assert batch_with_slow(now) == ["fast", "slow"]  # now a frame every 2 s: the next is due at now + 2
    # Due within the 30 s wait: the batch waits for it, and it comes.
    assert batch_with_slow(now + 10.0, after_s=0.2) == ["fast", "slow"]
    # Its pace is now 6 s (the median of 2 s and 10 s): next due at now + 16, after a 5 s wait would end, so
    # the fast camera's frame goes at once.
    batcher.max_wait_s = 5.0
    offer_newest(fast, frame("fast", 1))
    started = time.monotonic()
    assert [f.source for f in batcher.next_batch(threading.Event())] == ["fast"]
    assert time.monotonic() - started < 4.0


def test_a_failed_camera_drops_out_and_a_failed_file_ends_the_run() -> None:
    cam_a: queue.Queue = queue.Queue()
    cam_a.put(Failure(ConnectionError("refused"), "source a"))
    cam_b: queue.Queue = queue.Queue(maxsize=1)
    offer_newest(cam_b, frame("b", 0))
    batcher = Batcher({"a": cam_a, "b": cam_b}, 4, 0.01, threading.Event(), live=frozenset({"a", "b"}))
    assert [f.source for f in batcher.next_batch(threading.Event())] == ["b"]
    assert batcher.active == ["b"]

    file = filled("f", 1, end=False)
    file.put(Failure(ValueError("corrupt"), "source f"))
    batcher = Batcher({"f": file}, 4, 0.01, threading.Event())
    with pytest.raises(ValueError, match="corrupt"):
        batcher.next_batch(threading.Event())


def test_a_producer_always_ends_its_queue_even_when_stopped() -> None:
    """A stopped producer makes room for its end marker, so the batcher can tell "done" from "slow"."""
    stop, wakeup = threading.Event(), threading.Event()
    out: queue.Queue = queue.Queue(maxsize=2)
    thread = threading.Thread(target=produce, args=(lambda: (frame("f", i) for i in range(100)), out, stop,
                                                    wakeup, "f"))
    thread.start()
    for _ in range(100):  # until the producer blocks on the full queue
        if out.full():
            break
        wakeup.wait(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    items = [out.get_nowait() for _ in range(out.qsize())]
    assert isinstance(items[-1], EndOfStream) and items[-1].source == "f"
