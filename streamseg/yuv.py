"""YUV 4:2:0 on the host as FFmpeg converts it: the reference that the device's conversion matches."""

from __future__ import annotations

import av
import numpy as np

__all__ = ["YUV_FORMATS", "YUV_MATRICES", "ffmpeg_rgb", "yuv_to_rgb"]

YUV_FORMATS = ("yuv420p", "nv12")  # 4:2:0, planar U and V or interleaved UV, as PyAV gives them
YUV_MATRICES = ("bt601", "bt709")  # limited range


def yuv_to_rgb(pixels: np.ndarray, pixel_format: str, matrix: str) -> np.ndarray:
    """FFmpeg's conversion of (H * 3 / 2, W) YUV 4:2:0 to (H, W, 3) RGB, as a decoder's frame would get it."""
    frame = av.VideoFrame.from_ndarray(pixels, format=pixel_format)
    return ffmpeg_rgb(frame, "ITU709" if matrix == "bt709" else "ITU601")


def ffmpeg_rgb(frame: av.VideoFrame, src_colorspace: str | None = None) -> np.ndarray:
    """FFmpeg's RGB of a YUV frame, read with ``src_colorspace`` (None: the one the frame says).

    NV12 (NVDEC's layout) is laid out as planar YUV 4:2:0 first: FFmpeg converts NV12 by another route,
    which smooths the colour at edges (up to 40 levels apart), and the same video must give the same
    pixels whichever decoder ran.
    """
    if frame.format.name == "nv12":
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray(format="rgb24", src_colorspace=src_colorspace)
