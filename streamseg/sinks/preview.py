"""A live window per source (OpenCV), with fps and latency drawn on it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import cv2

from ..exceptions import SinkError
from ..types import FrameResult

__all__ = ["WindowPreviewSink"]


class WindowPreviewSink:
    """Shows each source's annotated frames in its own window; ``q`` or Esc asks the run to stop.

    Args:
        on_quit: called when the user presses q or Esc in a window.
    """

    stage = "show"
    wants_annotated = True

    def __init__(self, on_quit: Callable[[], None]) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SinkError("--show needs a display (no $DISPLAY); use --serve PORT to watch in a browser")
        self.on_quit = on_quit
        self._rate: dict[str, tuple[float, float]] = {}  # source -> (last time, fps estimate)

    def write(self, result: FrameResult) -> None:
        now = time.monotonic()
        last, fps = self._rate.get(result.source, (now, 0.0))
        if now > last:
            fps = 0.9 * fps + 0.1 / (now - last)
        self._rate[result.source] = (now, fps)
        image = result.annotated if result.annotated is not None else result.frame.image
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        latency_ms = (now - result.frame.captured) * 1000
        text = f"{fps:.1f} fps  latency {latency_ms:.0f} ms"
        cv2.putText(bgr, text, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bgr, text, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        try:
            cv2.imshow(f"streamseg - {result.source}", bgr)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            raise SinkError(f"cannot show a window: {exc}") from exc
        if key in (ord("q"), 27):
            self.on_quit()

    def close(self) -> None:
        try:
            cv2.destroyAllWindows()
            cv2.waitKey(1)
        except cv2.error:
            pass
