"""Reading files as FFmpeg's command line does, past damage and across restarted clocks.

A packet that does not demux or decode is skipped and counted, and every picture that does decode is kept:
a damaged file (flipped bits, a block of garbage, a cut) used to end at its first bad packet. FFmpeg's
demuxers find their footing again on the next read, and its decoders on the next keyframe; only the count
of what was lost, and the first reason, need to reach the user.

Formats made to be joined (MPEG-TS, MPEG-PS, FLV: ``cat a.ts b.ts``) may start their clock again midway.
Timestamps after such a jump are moved to follow on from the latest before it, on every stream alike, so
that times only grow, the sound stays with its picture, and a video and the sound copied beside it (read
by another reader of the same file) are moved the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av

__all__ = ["Damage", "Timeline", "decode", "flush", "packets"]

log = logging.getLogger(__name__)

# Reads in a row that fail before the demuxer is taken to be lost for good (an I/O error repeats
# where damaged data does not).
MAX_FAILED_READS = 50
# FFmpeg's formats whose timestamps may jump (AVFMT_TS_DISCONT), and what counts as a jump there, as its
# command line reads them: more than 10 s either way, or back by more than a tenth of a second.
DISCONTINUOUS = frozenset({"mpegts", "mpegtsraw", "mpeg", "mpegvideo", "flv", "live_flv", "rtp", "sdp"})
JUMP_S = Fraction(10)
BACK_S = Fraction(1, 10)


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


@dataclass
class Timeline:
    """Moves a joinable format's timestamps across a restarted clock (see the module's docstring); does
    nothing for other formats. Fed every packet of the file, in file order, so that two readers of one file
    move them alike."""

    active: bool
    path: str = ""  # the file, as warnings name it; none: this reader keeps quiet
    offset: Fraction = Fraction(0)  # seconds added to every timestamp from here on
    _next: dict[int, Fraction] = field(default_factory=dict)  # each stream's expected next time, moved

    @classmethod
    def of(cls, container: av.container.InputContainer, path: str = "") -> Timeline:
        return cls(active=container.format.name.split(",")[0] in DISCONTINUOUS, path=path)

    def place(self, packet: av.Packet) -> None:
        """Move ``packet``'s timestamps by the offset, first taking a jump that it shows into the offset."""
        if packet.dts is None or not packet.time_base:
            return
        time_base = packet.time_base
        at = packet.dts * time_base + self.offset
        expected = self._next.get(packet.stream.index)
        if expected is not None and (abs(at - expected) > JUMP_S or at + BACK_S < expected):
            # After everything before the jump, on any stream: the sound that ran past the picture is not
            # overlapped, and each stream's own next packet is not taken for another jump.
            resume = max(self._next.values())
            if self.path:  # one reader of the file says it (the video's), not each
                log.warning("%s: timestamps jump from %.2f s to %.2f s (joined recordings?); later ones follow "
                            "on from %.2f s", self.path, float(expected), float(at - self.offset), float(resume))
            self.offset += resume - at
            at = resume
            self._next.clear()
        shift = round(self.offset / time_base)
        if shift:
            packet.dts += shift
            if packet.pts is not None:
                packet.pts += shift
        self._next[packet.stream.index] = at + (packet.duration or 0) * time_base


def packets(container: av.container.InputContainer, streams: Iterable[av.stream.Stream],
            damage: Damage, timeline: Timeline | None = None) -> Iterator[av.Packet]:
    """The packets of ``streams`` in file order, reading on past what the demuxer cannot read, without
    PyAV's empty end-of-file packets (a decoder given one stops taking more: :func:`flush` ends it), with
    their timestamps placed by ``timeline`` where given (which then sees every stream's packets)."""
    streams = tuple(streams)
    wanted = {stream.index for stream in streams}
    if timeline is not None and not timeline.active:  # a gap in an MP4 or a Matroska file is the file's own
        timeline = None
    read = () if timeline is not None else streams  # () : every stream
    failed = 0
    while True:
        try:
            for packet in container.demux(*read):
                if packet.size == 0:
                    continue
                failed = 0
                if timeline is not None:
                    timeline.place(packet)
                if packet.stream.index in wanted:
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
