"""The Sink contract: what every output of a run is, and declares it needs.

The pipeline opens each sink in :meth:`~streamseg.Pipeline.start`, in the caller's thread, so that a
file that cannot be written or a port in use fails the start, not the run. It then gives each sink a
thread of its own (see :mod:`streamseg.runtime.outputs`), from which :meth:`Sink.write` and
:meth:`Sink.close` are called. A thread that a sink starts itself (a sender, a server) is the sink's:
it starts it and joins it in :meth:`Sink.close`.
"""

from __future__ import annotations

from typing import Any

from ..types import FrameResult

__all__ = ["Sink", "as_sink"]


class Sink:
    """One output. Subclass it to add a kind of output (see ``docs/architecture.md``).

    Attributes:
        stage: the name of its time in ``FrameResult.stats`` (``encode``, ``export``, ...).
        wants_annotated: the frames must be drawn for it (``FrameResult.annotated`` or ``drawn``).
        takes_yuv: it takes the drawn frame as YUV 4:2:0 made on the device (``FrameResult.drawn``), as a
            video encoder does; when every sink that wants drawn frames takes YUV, no RGB is downloaded.
        wants_masks: it reads the masks: they are copied to host memory with the batch's other copies.
        wants_stats: it is given the run's per-source statistics about once a second (:meth:`publish_stats`).
    """

    stage: str = "sink"
    wants_annotated: bool = False
    takes_yuv: bool = False
    wants_masks: bool = False
    wants_stats: bool = False

    def open(self) -> None:
        """Claim what the output needs before the first frame (a file, a port). What depends on the frames
        (a video's size) is made on the first :meth:`write`."""

    def write(self, result: FrameResult) -> None:
        """Write one result; results come in order for each source."""
        raise NotImplementedError

    def publish_stats(self, snapshot: list[dict]) -> None:
        """The run's per-source statistics now; called from the run's delivering thread (not the sink's)
        for a sink that ``wants_stats``, so it must be safe beside :meth:`write`."""

    def close(self) -> None:
        """Finish the output with what was written (a file's trailer, a server's last answer) and join any
        thread the sink started. Called once, also after a failure."""


class _Adopted(Sink):
    """An object with ``write`` and ``close`` (and perhaps ``open`` and the declared attributes) that does
    not derive from :class:`Sink`: the Python API has taken such sinks from the start."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.stage = getattr(target, "stage", type(target).__name__)
        self.wants_annotated = bool(getattr(target, "wants_annotated", False))
        self.takes_yuv = bool(getattr(target, "takes_yuv", False))
        self.wants_masks = bool(getattr(target, "wants_masks", False))

    def open(self) -> None:
        if callable(opener := getattr(self.target, "open", None)):
            opener()

    def write(self, result: FrameResult) -> None:
        self.target.write(result)

    def close(self) -> None:
        self.target.close()


def as_sink(target: Any) -> Sink:
    """``target`` as a :class:`Sink`: itself where it is one, else adopted."""
    return target if isinstance(target, Sink) else _Adopted(target)
