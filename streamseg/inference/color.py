"""YUV 4:2:0 to RGB and back on the model's device.

Decoders give and encoders take YUV 4:2:0: half the bytes of RGB. Converting on the host costs a pass
of FFmpeg's swscale per frame each way, on one core, growing with the pixels; on a GPU the same work is a few element-wise kernels, and the copies carry half the bytes.
Decoding, the result is within 2 levels of swscale's (its fixed-point arithmetic rounds down; chroma
is repeated over each 2x2 block, as swscale's planar converter does). Encoding, luma is within one
level of swscale's and chroma is the mean of each 2x2 block.
"""

from __future__ import annotations

import torch

from ..yuv import YUV_FORMATS

__all__ = ["yuv420_to_rgb", "rgb_to_yuv420"]

MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # (Kr, Kb), limited range


def yuv420_to_rgb(planes: torch.Tensor, pixel_format: str, matrix: str) -> torch.Tensor:
    """(B, H * 3 / 2, W) uint8 YUV 4:2:0 frames, laid out as PyAV's ``to_ndarray`` gives them, to
    (B, H, W, 3) uint8 RGB on the same device."""
    if pixel_format not in YUV_FORMATS:
        raise ValueError(f"pixel format must be one of {YUV_FORMATS}, got {pixel_format!r}")
    batch, rows, width = planes.shape
    height = rows * 2 // 3
    chroma = planes[:, height:]
    if pixel_format == "yuv420p":  # U plane then V plane, each (H / 2, W / 2)
        uv = chroma.reshape(batch, 2, height // 2, width // 2)
    else:  # nv12: (H / 2, W / 2) pairs of U, V
        uv = chroma.reshape(batch, height // 2, width // 2, 2).permute(0, 3, 1, 2)
    uv = (uv.float() - 128) * (255 / 224)
    uv = uv.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    cb, cr = uv[:, 0], uv[:, 1]
    y = (planes[:, :height].float() - 16) * (255 / 219)
    kr, kb = MATRICES[matrix]
    kg = 1 - kr - kb
    # Plain multiply-adds, not a matrix product: the same float32 result on every device (a GPU may
    # run float32 matrix products in TF32).
    r = y + cr * (2 * (1 - kr))
    g = y - cb * (2 * kb * (1 - kb) / kg) - cr * (2 * kr * (1 - kr) / kg)
    b = y + cb * (2 * (1 - kb))
    return torch.stack([r, g, b], dim=-1).floor_().clamp_(0, 255).to(torch.uint8)


def rgb_to_yuv420(rgb: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB, H and W even, to (B, H * 3 / 2, W) uint8 planar YUV 4:2:0 in BT.601,
    limited range (what the video sink declares), laid out as PyAV's ``from_ndarray`` takes it."""
    kr, kb = MATRICES["bt601"]
    batch, height, width, _ = rgb.shape
    x = rgb.float()
    luma = x[..., 0] * kr + x[..., 1] * (1 - kr - kb) + x[..., 2] * kb

    def block_mean(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, height // 2, 2, width // 2, 2).mean((2, 4)).flatten(1)

    y = luma.flatten(1) * (219 / 255) + 16
    mean_luma = block_mean(luma)
    cb = (block_mean(x[..., 2]) - mean_luma) * (224 / 255 / (2 * (1 - kb))) + 128
    cr = (block_mean(x[..., 0]) - mean_luma) * (224 / 255 / (2 * (1 - kr))) + 128
    planes = torch.cat([y, cb, cr], dim=1).round_().clamp_(0, 255).to(torch.uint8)
    return planes.view(batch, height * 3 // 2, width)
