"""BT.709 limited-range colour conversion, the one place the project converts YUV and RGB.

Video codecs and test sequences are YUV; networks and metrics work on RGB. Stating the matrix
and range explicitly avoids the silent BT.601/full-range defaults that skew PSNR comparisons.
"""

from __future__ import annotations

import numpy as np

# BT.709 luma coefficients.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB


def rgb_to_yuv444(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) → limited-range Y'CbCr float (..., 3) in code values [16,235]/[16,240]."""
    x = rgb.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = _KR * r + _KG * g + _KB * b
    cb = (b - y) / (2 * (1 - _KB))
    cr = (r - y) / (2 * (1 - _KR))
    return np.stack([16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr], axis=-1)


def yuv444_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Limited-range Y'CbCr float (..., 3) → RGB uint8 (..., 3), rounded and clipped."""
    y = (yuv[..., 0] - 16) / 219
    cb = (yuv[..., 1] - 128) / 224
    cr = (yuv[..., 2] - 128) / 224
    r = y + 2 * (1 - _KR) * cr
    b = y + 2 * (1 - _KB) * cb
    g = (y - _KR * r - _KB * b) / _KG
    rgb = np.stack([r, g, b], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) → uint8 planes Y (H, W), U, V (ceil(H/2), ceil(W/2)).

    Chroma is subsampled by averaging 2×2 blocks (centred siting); an odd last row/column is
    edge-replicated first, as y4m and FFmpeg's yuv420p do for odd sizes.
    """
    h, w = rgb.shape[:2]
    yuv = rgb_to_yuv444(rgb)
    y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
    c = np.pad(yuv[..., 1:], ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    c = c.reshape((h + 1) // 2, 2, (w + 1) // 2, 2, 2).mean(axis=(1, 3))
    c = np.clip(np.rint(c), 0, 255).astype(np.uint8)
    return y, c[..., 0], c[..., 1]


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """uint8 planes Y (H, W), U, V (ceil(H/2), ceil(W/2)) → RGB uint8 (H, W, 3), chroma upsampled by repetition."""
    u2 = np.repeat(np.repeat(u, 2, axis=0), 2, axis=1)[: y.shape[0], : y.shape[1]]
    v2 = np.repeat(np.repeat(v, 2, axis=0), 2, axis=1)[: y.shape[0], : y.shape[1]]
    yuv = np.stack([y, u2, v2], axis=-1).astype(np.float64)
    return yuv444_to_rgb(yuv)
