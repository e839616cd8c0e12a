"""Identity over time: the tracking stage gives each thing segment a track id that holds across frames."""

from .stage import Tracking, tracking_for
from .tracker import Tracker

__all__ = ["Tracker", "Tracking", "tracking_for"]
