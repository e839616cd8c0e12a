"""What a source hands on of a decoded frame: RGB, or the decoder's own YUV 4:2:0 for a GPU to convert,
turned upright when the video says players should rotate it (phone videos)."""

from __future__ import annotations

import av
import cv2
import numpy as np

from ..types import YUV_FORMATS

__all__ = ["display_rotation", "frame_pixels"]

# FFmpeg's colour matrices (AVColorSpace) that the device conversion knows, all in limited range:
# BT.709; unspecified (which FFmpeg converts as BT.601), BT.470BG and SMPTE 170M (both BT.601).
_MATRICES = {1: "bt709", 2: "bt601", 5: "bt601", 6: "bt601"}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Turning a frame counter-clockwise by its display rotation shows it as players (and FFmpeg's CLI) do.
_UPRIGHT = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def display_rotation(decoded: av.VideoFrame) -> int:
    """Degrees counter-clockwise (0, 90, 180 or 270) that a player turns this frame by to show it.

    Phone videos are stored as the sensor saw them, with a display matrix saying how to turn them.
    Angles that are not a multiple of 90 (never seen in practice) are ignored, as are mirrorings.
    PyAV before 14 does not expose the matrix: frames then stay as stored.
    """
    angle = getattr(decoded, "rotation", 0) or 0
    quarter = round(angle / 90)
    if abs(angle - 90 * quarter) > 2:
        return 0
    return quarter % 4 * 90


def frame_pixels(decoded: av.VideoFrame, yuv: bool) -> tuple[np.ndarray, str, str]:
    """(pixels, pixel_format, matrix) for a :class:`~streamseg.types.Frame`, upright.

    With ``yuv``, frames in 4:2:0 of an even size, limited range and a known matrix keep the decoder's
    layout; any other frame, and every frame without ``yuv``, is converted to RGB here by FFmpeg.
    Frames with a display rotation are turned upright here, in RGB: the model sees what a viewer sees.
    """
    turn = display_rotation(decoded)
    if yuv and not turn:
        sw_format = getattr(decoded, "sw_format", None)  # NVDEC frames: the layout they download in
        layout = (sw_format or decoded.format).name
        matrix = _MATRICES.get(int(decoded.colorspace))
        even = decoded.width % 2 == 0 and decoded.height % 2 == 0
        if layout in YUV_FORMATS and matrix and even and int(decoded.color_range) != _FULL_RANGE:
            return decoded.to_ndarray(), layout, matrix
    rgb = decoded.to_ndarray(format="rgb24")
    if turn:
        rgb = cv2.rotate(rgb, _UPRIGHT[turn])
    return rgb, "rgb24", "bt601"
