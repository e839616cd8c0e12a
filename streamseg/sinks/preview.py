"""A live window per source (OpenCV), with fps and latency drawn on it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import sys
import time
from collections.abc import Callable

import cv2

from ..exceptions import SinkError
from ..types import FrameResult
from .base import Sink

__all__ = ["WindowPreviewSink"]


def display_problem() -> str | None:
    """Why no window can open here, or None. Asked before OpenCV's Qt is: Qt aborts the whole process when
    its display does not answer (a stale $DISPLAY over ssh), which would take the recording with it."""
    display = os.environ.get("DISPLAY")
    if not display:
        return None if os.environ.get("WAYLAND_DISPLAY") else "no $DISPLAY"
    library = ctypes.util.find_library("X11")
    if library is not None:  # Xlib's own answer, authorisation included; it returns NULL, never aborts
        xlib = ctypes.CDLL(library)
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        connection = xlib.XOpenDisplay(display.encode())
        if not connection:
            return f"cannot open display {display}"
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xlib.XCloseDisplay(connection)
        return None
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return f"cannot read display {display!r}"
    try:  # without Xlib: is anything listening where the display should be?
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(2)
                conn.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=2).close()
    except OSError:
        return f"cannot open display {display}"
    return None


class WindowPreviewSink(Sink):
    """Shows each source's annotated frames in its own window; ``q`` or Esc asks the run to stop.

    Args:
        on_quit: called when the user presses q or Esc in a window.
    """

    stage = "show"
    wants_annotated = True

    def __init__(self, on_quit: Callable[[], None]) -> None:
        self.on_quit = on_quit
        self._rate: dict[str, tuple[float, float]] = {}  # source -> (last time, fps estimate)

    def open(self) -> None:
        """Raises:
            SinkError: no display answers (before OpenCV is asked, which could abort the process)."""
        if sys.platform.startswith("linux"):
            problem = display_problem()
            if problem:
                raise SinkError(f"--show needs a display ({problem}); use --serve PORT to watch in a browser")

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
