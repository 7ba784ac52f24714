"""Encode a video to ``.gnvc`` bytes and decode it back: the codec's one end-to-end implementation.

A video is cut into groups of ``gop_frames`` (1 + 4k) frames that are coded independently (random
access, bounded memory); a short last group is padded to 1 + 4k by repeating its last frame, and
every frame is padded to multiples of 16 by edge replication. Both paddings are cropped away on
decode using the geometry in the header. Per group: VAE encode → I/P latent codec → streams.
Decoding reverses it, refining the decoded latents with the DiT when the model has a refiner and
the header (or ``steps``) asks for it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
from tqdm.auto import tqdm

from gnvc.codec.bitstream import Bitstream, Group, Header, read_bitstream, write_bitstream
from gnvc.codec.latent_codec import CompressedLatents
from gnvc.errors import BitstreamError, InputError
from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.models.vae import SPATIAL_FACTOR, padded_frames, padded_size

MAX_FPS_DEN = 1_000_000


@dataclass
class EncodeResult:
    data: bytes
    header: Header
    seconds: float
    latents_hat: list[torch.Tensor] = field(default_factory=list)  # per group, what the decoder will get
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, every header byte counted."""
        return 8 * len(self.data) / (self.header.frames * self.header.width * self.header.height)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) → float (1, 3, T, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return (x / 127.5 - 1.0).unsqueeze(0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, T, H, W) in [-1, 1] → uint8 (T, H, W, 3)."""
    x = ((x[0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def pad_group(frames: np.ndarray) -> np.ndarray:
    """Pad (T, H, W, 3) to 1 + 4k frames (repeat the last) and sides to multiples of 16 (edge)."""
    t, h, w = frames.shape[:3]
    pad_t, pad_h, pad_w = padded_frames(t) - t, padded_size(h) - h, padded_size(w) - w
    return np.pad(frames, ((0, pad_t), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def latents_crc(latents: torch.Tensor) -> int:
    return zlib.crc32(latents.detach().to(torch.float32).contiguous().numpy().tobytes())


class _Timer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0
        return out


def check_video(video: Video) -> None:
    if video.num_frames < 1:
        raise InputError("the video has no frames")
    if video.width > 16384 or video.height > 16384:
        raise InputError(f"{video.width}x{video.height} is larger than the 16384 pixels a side gnvc codes")


@torch.no_grad()
def encode_video(
    model: GnvcModel,
    video: Video,
    quality: int,
    *,
    gop_frames: int | None = None,
    t_n: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EncodeResult:
    """Encode ``video`` at quality index ``quality`` (0 = lowest rate)."""
    check_video(video)
    coding = model.coding
    if not 0 <= quality < model.codec.num_qualities:
        raise InputError(f"quality must be in 0..{model.codec.num_qualities - 1} for this model, got {quality}")
    gop = int(gop_frames or coding.get("gop_frames", 17))
    if gop < 1 or (gop - 1) % 4 or gop > 255:
        raise InputError(f"group size must be 1 + 4k frames (at most 253), got {gop}")
    fps = Fraction(video.fps).limit_denominator(MAX_FPS_DEN)
    header = Header(
        profile=model.name,
        weights_hash=model.weights_hash,
        width=video.width,
        height=video.height,
        frames=video.num_frames,
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        gop_frames=gop,
        quality=int(quality),
        t_n=float(coding.get("t_n", 0.7) if t_n is None else t_n),
        steps=int(coding.get("steps", 5) if steps is None else steps),
        seed=int(seed) & 0xFFFFFFFF,
    )
    timer = _Timer()
    t0 = time.perf_counter()
    bs = Bitstream(header)
    latents_hat = []
    for gi in tqdm(range(header.num_groups), desc="encode", unit="group", disable=not progress):
        frames = video.frames[gi * gop : gi * gop + header.group_frames(gi)]
        x = frames_to_tensor(pad_group(frames))
        latents = timer("vae_encode", model.vae.encode, x)
        compressed, l_hat, _ = timer("latent_codec", model.codec.compress, latents, quality)
        bs.groups.append(Group(compressed.frames, latents_crc(l_hat)))
        latents_hat.append(l_hat)
    data = write_bitstream(bs)
    return EncodeResult(data, header, time.perf_counter() - t0, latents_hat, timer.totals)


def check_model_matches(model: GnvcModel, header: Header) -> None:
    if header.profile != model.name:
        raise BitstreamError(f"the bitstream was encoded with profile {header.profile!r}, the model is {model.name!r}")
    if header.weights_hash != model.weights_hash:
        raise BitstreamError(
            f"the bitstream was encoded with weights {header.weights_hash.hex()}, these weights are "
            f"{model.weights_hash.hex()}; decode with the model directory it was encoded with"
        )
    if header.quality >= model.codec.num_qualities:
        raise BitstreamError(
            f"quality index {header.quality} is outside this model's 0..{model.codec.num_qualities - 1}"
        )


def decode_latents(model: GnvcModel, bs: Bitstream, gi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy-decode group ``gi`` and verify it against the encoder's reconstruction CRC."""
    h = bs.header
    size = (padded_size(h.height) // SPATIAL_FACTOR, padded_size(h.width) // SPATIAL_FACTOR)
    compressed = CompressedLatents(quality=h.quality, size=size, frames=bs.groups[gi].streams)
    latents_hat, context = model.codec.decompress(compressed)
    if latents_crc(latents_hat) != bs.groups[gi].recon_crc:
        raise BitstreamError(
            f"group {gi}: decoded latents differ from the encoder's (reconstruction CRC mismatch); "
            "the stream or the weights do not match"
        )
    return latents_hat, context


@torch.no_grad()
def decode_video(model: GnvcModel, data: bytes, *, steps: int | None = None, progress: bool = False) -> Video:
    """Decode ``.gnvc`` bytes to a video; ``steps`` overrides the header's refinement steps (0 = none)."""
    bs = read_bitstream(data)
    h = bs.header
    check_model_matches(model, h)
    n_steps = h.steps if steps is None else int(steps)
    out = np.empty((h.frames, h.height, h.width, 3), dtype=np.uint8)
    for gi in tqdm(range(h.num_groups), desc="decode", unit="group", disable=not progress):
        latents_hat, context = decode_latents(model, bs, gi)
        if model.refiner is not None and n_steps > 0:
            latents_hat = model.refiner.refine(latents_hat, context, t_n=h.t_n, steps=n_steps, seed=h.seed + gi)
        pixels = tensor_to_frames(model.vae.decode(latents_hat))
        n = h.group_frames(gi)
        out[gi * h.gop_frames : gi * h.gop_frames + n] = pixels[:n, : h.height, : h.width]
    return Video(out, Fraction(h.fps_num, h.fps_den))
