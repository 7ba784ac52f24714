"""Shared helpers: checking that two videos can be compared, and turning frames into tensors.

Metrics take uint8 RGB frames (T, H, W, 3), as :class:`gnvc.io.video.Video` holds them, so the
codec's output, the anchors' decoded streams and the originals are measured by the same code.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from gnvc.errors import InputError


def check_pair(ref: np.ndarray, dist: np.ndarray) -> None:
    """Raise :class:`InputError` unless both are uint8 (T, H, W, 3) of the same shape."""
    for name, a in (("reference", ref), ("distorted", dist)):
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise InputError(f"{name} frames must be uint8 (T, H, W, 3), got {a.dtype} {tuple(a.shape)}")
    if ref.shape != dist.shape:
        raise InputError(
            f"reference and distorted videos differ in shape: {ref.shape[0]} frames of {ref.shape[2]}x{ref.shape[1]} "
            f"vs {dist.shape[0]} frames of {dist.shape[2]}x{dist.shape[1]}; compare the same frames at the same size"
        )
    if ref.shape[0] == 0:
        raise InputError("the videos have no frames")


def to_tensor(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) → float32 (N, 3, H, W) in [0, 1] on ``device``."""
    arr = np.ascontiguousarray(frames)
    if not arr.flags.writeable:  # torch warns on read-only arrays (e.g. frames decoded from PNG bytes)
        arr = arr.copy()
    x = torch.from_numpy(arr).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Slices covering range(n) in chunks of ``batch_size`` (bounds memory at large resolutions)."""
    step = max(1, int(batch_size))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))
