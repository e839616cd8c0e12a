"""What a source hands on of a decoded frame: RGB, or the decoder's own YUV 4:2:0 for a GPU to convert,
turned upright when the video says players should rotate it (phone videos)."""

from __future__ import annotations

import av
import cv2
import numpy as np
import torch

from ..yuv import YUV_FORMATS, ffmpeg_rgb

__all__ = ["colour_matrix", "display_rotation", "frame_pixels", "nv12_tensor"]

# FFmpeg's colour matrices (AVColorSpace) that the device conversion knows, all in limited range:
# BT.709; BT.470BG and SMPTE 170M (both BT.601).
_MATRICES = {1: "bt709", 5: "bt601", 6: "bt601"}
_UNSPECIFIED = 2
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


def colour_matrix(decoded: av.VideoFrame) -> str | None:
    """The matrix a frame's YUV was made with: what the file says; for video that says nothing, what
    players take (mpv, browsers: BT.709 from 1280 wide or 577 high up, BT.601 below), where FFmpeg's
    own conversion takes BT.601 at any size and so shifts the colours of untagged HD video."""
    space = int(decoded.colorspace)
    if space == _UNSPECIFIED:
        return "bt709" if decoded.width >= 1280 or decoded.height > 576 else "bt601"
    return _MATRICES.get(space)


def frame_pixels(decoded: av.VideoFrame, yuv: bool) -> tuple[np.ndarray | torch.Tensor, str, str]:
    """(pixels, pixel_format, matrix) for a :class:`~streamseg.types.Frame`, upright.

    With ``yuv``, frames in 4:2:0 of an even size, limited range and a known matrix keep the decoder's
    layout; any other frame, and every frame without ``yuv``, is converted to RGB here by FFmpeg.
    Frames with a display rotation are turned upright here, in RGB: the model sees what a viewer sees.
    A frame NVDEC left on the GPU (``HWAccel(is_hw_owned=True)``) stays there as an NV12 tensor when it
    keeps its layout, and is copied to the host otherwise.
    """
    turn = display_rotation(decoded)
    on_gpu = decoded.format.name == "cuda"
    if yuv and not turn:
        sw_format = getattr(decoded, "sw_format", None)  # NVDEC frames: the layout they download in
        layout = (sw_format or decoded.format).name
        matrix = colour_matrix(decoded)
        even = decoded.width % 2 == 0 and decoded.height % 2 == 0
        if layout in YUV_FORMATS and matrix and even and int(decoded.color_range) != _FULL_RANGE:
            if on_gpu and layout == "nv12":
                return nv12_tensor(decoded), layout, matrix
            return decoded.to_ndarray(), layout, matrix
    if on_gpu:
        decoded = _on_host(decoded)
    untagged_hd = int(decoded.colorspace) == _UNSPECIFIED and colour_matrix(decoded) == "bt709"
    rgb = ffmpeg_rgb(decoded, "ITU709" if untagged_hd else None)
    if turn:
        rgb = cv2.rotate(rgb, _UPRIGHT[turn])
    return rgb, "rgb24", "bt601"


def nv12_tensor(decoded: av.VideoFrame) -> torch.Tensor:
    """An NV12 frame as one (H * 3 / 2, W) uint8 tensor where its planes are (on the GPU for NVDEC's
    frames, read through DLPack without a copy to the host).

    The planes are copied into a tensor of torch's own on the calling thread's current stream: FFmpeg's
    frame goes back to its pool as soon as this returns. NVDEC writes its frames on the CUDA default
    stream, which orders that copy after its own (PyAV hands the planes on without a stream to wait on).
    """
    # The capsules themselves: torch.from_dlpack(plane) would pass a stream, which PyAV refuses for CUDA.
    luma = torch.from_dlpack(decoded.planes[0].__dlpack__())
    chroma = torch.from_dlpack(decoded.planes[1].__dlpack__())  # (H / 2, W / 2, 2), U and V interleaved
    return torch.cat([luma, chroma.reshape(luma.shape[0] // 2, luma.shape[1])])


def _on_host(decoded: av.VideoFrame) -> av.VideoFrame:
    """A frame NVDEC left on the GPU, copied to the host with the tags the conversions read (8-bit
    4:2:0 only: streamseg keeps frames on the GPU for such video alone)."""
    sw_format = (getattr(decoded, "sw_format", None) or decoded.format).name
    if sw_format != "nv12":
        raise ValueError(f"NVDEC frames in {sw_format} are not read on the host here")
    host = av.VideoFrame.from_ndarray(nv12_tensor(decoded).cpu().numpy(), format="nv12")
    host.colorspace, host.color_range = decoded.colorspace, decoded.color_range
    return host
