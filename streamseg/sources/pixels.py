"""What a source hands on of a decoded frame: RGB, or the decoder's own YUV 4:2:0 for a GPU to convert."""

from __future__ import annotations

import av
import numpy as np

from ..types import YUV_FORMATS

__all__ = ["frame_pixels"]

# FFmpeg's colour matrices (AVColorSpace) that the device conversion knows, all in limited range:
# BT.709; unspecified (which FFmpeg converts as BT.601), BT.470BG and SMPTE 170M (both BT.601).
_MATRICES = {1: "bt709", 2: "bt601", 5: "bt601", 6: "bt601"}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def frame_pixels(decoded: av.VideoFrame, yuv: bool) -> tuple[np.ndarray, str, str]:
    """(pixels, pixel_format, matrix) for a :class:`~streamseg.types.Frame`.

    With ``yuv``, frames in 4:2:0 of an even size, limited range and a known matrix keep the decoder's
    layout; any other frame, and every frame without ``yuv``, is converted to RGB here by FFmpeg.
    """
    if yuv:
        sw_format = getattr(decoded, "sw_format", None)  # NVDEC frames: the layout they download in
        layout = (sw_format or decoded.format).name
        matrix = _MATRICES.get(int(decoded.colorspace))
        even = decoded.width % 2 == 0 and decoded.height % 2 == 0
        if layout in YUV_FORMATS and matrix and even and int(decoded.color_range) != _FULL_RANGE:
            return decoded.to_ndarray(), layout, matrix
    return decoded.to_ndarray(format="rgb24"), "rgb24", "bt601"
