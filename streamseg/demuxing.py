"""Reading past damage, as FFmpeg's command line does: a packet that does not demux or decode is skipped
and counted, and every picture that does decode is kept.

A damaged file (flipped bits, a block of garbage, a cut) used to end at its first bad packet. FFmpeg's
demuxers find their footing again on the next read, and its decoders on the next keyframe; only the
count of what was lost, and the first reason, need to reach the user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av

__all__ = ["Damage", "decode", "flush", "packets"]

log = logging.getLogger(__name__)

# Reads in a row that fail before the demuxer is taken to be lost for good (an I/O error repeats
# where damaged data does not).
MAX_FAILED_READS = 50


@dataclass
class Damage:
    """What a source lost to damage: packets the demuxer or the decoder could not read, and why the
    first one failed. Written by the source's own thread only."""

    packets: int = 0
    first: str = ""

    def note(self, exc: BaseException) -> None:
        self.packets += 1
        if not self.first:
            self.first = str(getattr(exc, "strerror", None) or exc)

    def report(self, path: str) -> None:
        """Say, once the source has ended, what was skipped."""
        if self.packets:
            log.warning("%s: %d corrupt packet%s skipped (%s); every frame that decoded was kept", path,
                        self.packets, "" if self.packets == 1 else "s", self.first)


def packets(container: av.container.InputContainer, streams: Iterable[av.stream.Stream],
            damage: Damage) -> Iterator[av.Packet]:
    """The packets of ``streams`` in file order, reading on past what the demuxer cannot read, without
    PyAV's empty end-of-file packets (a decoder given one stops taking more: :func:`flush` ends it)."""
    streams = tuple(streams)
    failed = 0
    while True:
        try:
            for packet in container.demux(*streams):
                if packet.size == 0:
                    continue
                failed = 0
                yield packet
            return
        except IndexError:
            # PyAV's end-of-file pass over the streams, when the damage made the demuxer add one mid-file
            # (MPEG-TS): every packet has been read by then.
            return
        except av.error.EOFError:
            return
        except av.FFmpegError as exc:
            damage.note(exc)
            failed += 1
            if failed >= MAX_FAILED_READS:
                return


def decode(stream: av.stream.Stream, packet: av.Packet, damage: Damage) -> list:
    """The pictures (or sound) one packet gives; none, counted, where it does not decode."""
    try:
        return stream.decode(packet)
    except av.FFmpegError as exc:
        damage.note(exc)
        return []


def flush(stream: av.stream.Stream, damage: Damage) -> list:
    """What the decoder still holds once the packets have ended."""
    try:
        return stream.decode(None)
    except av.error.EOFError:
        return []
    except av.FFmpegError as exc:
        damage.note(exc)
        return []
