"""Frames ↔ tensors, padding, and the latent CRC: what the encoder and the decoder share."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from gnvc.codec.container import Header
from gnvc.models.vae import SPATIAL_FACTOR, padded_size


def frames_to_tensor(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (1, 3, T, H, W) in [-1, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(3, 0, 1, 2).float()
    return (x / 127.5 - 1.0).unsqueeze(0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, T, H, W) in [-1, 1] → uint8 (T, H, W, 3) on the CPU."""
    x = ((x[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def pad_frame(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) → sides padded to multiples of 16 by edge replication (cropped back on decode)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, padded_size(h) - h), (0, padded_size(w) - w), (0, 0)), mode="edge")


def latent_bytes(latent_int: torch.Tensor) -> bytes:
    """An integer latent as int32 little-endian bytes (C order): what the format's CRC covers."""
    return latent_int.detach().to(torch.int32).cpu().numpy().astype("<i4").tobytes()


def latent_crc(latent_int: torch.Tensor) -> int:
    """CRC32 of :func:`latent_bytes`: the format's reconstruction check."""
    return zlib.crc32(latent_bytes(latent_int))


def latent_size(header: Header) -> tuple[int, int]:
    """Latent (h, w) of a stream: the padded frame size over the VAE's 8× stride."""
    return padded_size(header.height) // SPATIAL_FACTOR, padded_size(header.width) // SPATIAL_FACTOR
