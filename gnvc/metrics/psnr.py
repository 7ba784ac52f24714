"""PSNR on RGB and on BT.709 luma, per frame.

Per-frame PSNR is averaged over frames (the convention of learned video coding papers, e.g. DCVC),
not computed from the pooled MSE. Identical frames would give infinite PSNR, which JSON and
averages cannot hold: the value is capped at :data:`PSNR_CAP_DB`.
"""

from __future__ import annotations

import numpy as np

from gnvc.io.color import rgb_to_yuv444
from gnvc.metrics._frames import check_pair

PSNR_CAP_DB = 100.0
PEAK = 255.0


def _psnr_from_mse(mse: np.ndarray) -> np.ndarray:
    floor = PEAK**2 / 10 ** (PSNR_CAP_DB / 10)  # the MSE at which PSNR reaches the cap
    return 10.0 * np.log10(PEAK**2 / np.maximum(mse, floor))


def psnr_rgb(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) over the three RGB channels, peak 255."""
    check_pair(ref, dist)
    diff = ref.astype(np.float64) - dist.astype(np.float64)
    return _psnr_from_mse(np.mean(diff * diff, axis=(1, 2, 3)))


def luma_bt709(frames: np.ndarray) -> np.ndarray:
    """8-bit limited-range BT.709 luma (T, H, W) as float, rounded like an 8-bit Y plane."""
    return np.rint(rgb_to_yuv444(frames)[..., 0])


def psnr_y(ref: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of BT.709 luma (8-bit code values, peak 255)."""
    check_pair(ref, dist)
    diff = luma_bt709(ref) - luma_bt709(dist)
    return _psnr_from_mse(np.mean(diff * diff, axis=(1, 2)))
