"""Many videos, long videos in parts, and many cameras across a Ray cluster (``--cluster``).

- :mod:`.connect`: Ray itself, an optional extra (``pip install 'streamseg[ray]'``), and the connection.
- :mod:`.worker`: the worker, a Ray actor that loads the model once and runs whole inputs (or a share of
  the cameras) through the ordinary :class:`~streamseg.runtime.pipeline.Pipeline`, so frames never cross
  Ray's object store.
- :mod:`.files`: the driver's side for many videos: the work list, a worker per slot, retries when a worker
  dies, the manifest.
- :mod:`.chunks`: long files cut at keyframes into parts, and the parts joined without re-encoding.
- :mod:`.cameras`: the driver's side for cameras: spread over the workers, moved when one dies, one page.
- :mod:`.progress`: the driver's progress lines.

Nothing here is a scheduler of its own: Ray places the workers, restarts none (the pool replaces a dead one,
which Ray starts wherever there is room) and carries the calls.
"""

from .files import run_on_cluster

__all__ = ["run_on_cluster"]
