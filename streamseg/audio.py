"""A source's sound on its way to the outputs that copy it."""

from __future__ import annotations

import collections
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import av

__all__ = ["AudioFeed", "put_each"]


@dataclass(frozen=True)
class AudioFeed:
    """A source's sound, demuxed beside its video by the source's own thread, for a video output to copy
    (a pipe, which cannot be reopened for it as a file is; a camera).

    Attributes:
        streams: the input's audio streams, templates for the output's (a camera's is known once it
            connects, before its first frame).
        packets: their packets in demux order, then None once the input has ended.
        held: packets an output read but left to the next one (a recording's next segment), read first.
    """

    streams: list[av.AudioStream]
    packets: queue.Queue
    held: collections.deque = field(default_factory=collections.deque)

    def put(self, packet: av.Packet | None) -> None:
        """Queue a packet (None: the input has ended), making room by dropping the oldest: an output that
        stopped reading for a while (a server away) takes up again with the sound of now, and one that
        never reads (its container refused the codec) keeps no more than the queue holds."""
        while True:
            try:
                self.packets.put_nowait(packet)
                return
            except queue.Full:
                try:
                    self.packets.get_nowait()
                except queue.Empty:
                    pass

    def available(self) -> Iterator[av.Packet | None]:
        """The packets demuxed so far, each once; None where the next has not come yet (ask again
        later); it ends after the last."""
        while True:
            if self.held:
                yield self.held.popleft()
                continue
            try:
                packet = self.packets.get_nowait()
            except queue.Empty:
                yield None
                continue
            if packet is None:
                return
            yield packet


def put_each(feeds: Sequence[AudioFeed], packet: av.Packet | None) -> None:
    """Queue ``packet`` (None: the input has ended) for every output's feed: the first takes it, each
    other a copy, as each output rewrites the timing of its own."""
    for k, feed in enumerate(feeds):
        feed.put(packet if k == 0 or packet is None else _copy(packet))


def _copy(packet: av.Packet) -> av.Packet:
    twin = av.Packet(bytes(packet))
    twin.pts, twin.dts, twin.time_base, twin.duration = packet.pts, packet.dts, packet.time_base, packet.duration
    twin.stream = packet.stream
    return twin
