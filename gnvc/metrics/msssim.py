"""MS-SSIM on RGB (pytorch-msssim), per frame.

Five scales with an 11×11 Gaussian window (σ = 1.5) need a shorter side above 160 pixels
((11 − 1)·2⁴). For smaller frames (QCIF's 144 lines) the window shrinks to the largest odd size
that fits, σ kept; the size used is reported with the values so numbers stay comparable.
"""

from __future__ import annotations

import numpy as np
import torch

from gnvc.errors import InputError
from gnvc.metrics._frames import batches, check_pair, to_tensor

DEFAULT_WIN = 11
SCALES = 5


def window_size(height: int, width: int) -> int:
    """Largest odd window ≤ 11 with which 5-scale MS-SSIM fits the frame."""
    side = min(height, width)
    win = DEFAULT_WIN
    while win >= 3 and side <= (win - 1) * 2 ** (SCALES - 1):
        win -= 2
    if win < 3:
        raise InputError(f"MS-SSIM needs frames with a shorter side above 32 pixels, got {width}x{height}")
    return win


@torch.no_grad()
def msssim(ref: np.ndarray, dist: np.ndarray, *, device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """Per-frame MS-SSIM of RGB frames (data range 255; the mean over channels)."""
    from pytorch_msssim import ms_ssim

    check_pair(ref, dist)
    win = window_size(ref.shape[1], ref.shape[2])
    out = []
    for s in batches(ref.shape[0], batch_size):
        x, y = to_tensor(ref[s], device) * 255.0, to_tensor(dist[s], device) * 255.0
        out.append(ms_ssim(x, y, data_range=255.0, size_average=False, win_size=win).double().cpu().numpy())
    return np.concatenate(out)
