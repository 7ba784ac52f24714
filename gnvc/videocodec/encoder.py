"""Encode a stream of frames to ``.gnvc``: causal VAE chunk by chunk → integer-loop latent codec → records.

One P-chain per segment (``intra_period`` latent frames; default: the whole video). A segment's
first frame is encoded alone (its I-latent), then every four frames give one P-latent; only the
very last chunk of the video is padded (by repeating its last frame). Memory holds one chunk.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from gnvc.codec.container import INTER, INTRA, MAX_STEPS, ContainerWriter, Header
from gnvc.codec.integer import from_fixed
from gnvc.errors import InputError
from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.models.vae import TEMPORAL_FACTOR
from gnvc.videocodec.frames import frames_to_tensor, latent_crc, pad_frame

MAX_FPS_DEN = 1_000_000
MAX_SIDE = 16384


@dataclass
class EncodeResult:
    header: Header
    num_bytes: int
    seconds: float
    data: bytes | None = None  # the stream, when encoded in memory (encode_video)
    latents: list[torch.Tensor] = field(default_factory=list)  # decoder's latents, when asked for
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file, every header, index and footer byte counted."""
        return 8 * self.num_bytes / (self.header.frames * self.header.width * self.header.height)


def coding_settings(
    model: GnvcModel, quality: int, intra_period: int | None, t_n: float | None, steps: int | None
) -> tuple[int, float, int]:
    """Resolve and validate the coding options against the model (before any frame is read)."""
    coding = model.coding
    if not 0 <= quality < model.codec.num_qualities:
        raise InputError(f"quality must be in 0..{model.codec.num_qualities - 1} for this model, got {quality}")
    period = int(coding.get("intra_period", 0) if intra_period is None else intra_period)
    t_n = float(coding.get("t_n", 0.7) if t_n is None else t_n)
    steps = int(coding.get("steps", 5) if steps is None else steps)
    check_coding_options(intra_period=period if intra_period is not None else None, t_n=t_n, steps=steps)
    return period, t_n, steps


def check_coding_options(
    *, quality: int | None = None, intra_period: int | None = None, t_n: float | None = None, steps: int | None = None
) -> None:
    """The model-independent checks, shared by the CLI (which runs them before loading anything)."""
    if quality is not None and quality < 0:
        raise InputError(f"quality must be ≥ 0, got {quality}")
    if intra_period is not None and intra_period < 1:
        raise InputError(f"--intra-period must be ≥ 1 latent frame, got {intra_period}")
    if t_n is not None and not 0.0 < t_n < 1.0:
        raise InputError(f"t_N must be in (0, 1), got {t_n}")
    if steps is not None and not 0 <= steps <= MAX_STEPS:
        raise InputError(f"refinement steps must be in 0..{MAX_STEPS} (what the header holds), got {steps}")


def model_device(model: GnvcModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_stream(
    model: GnvcModel,
    frames: Iterable[np.ndarray],
    out: BinaryIO,
    *,
    width: int,
    height: int,
    fps: Fraction | float,
    quality: int,
    num_frames: int | None = None,
    intra_period: int | None = None,
    t_n: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    keep_latents: bool = False,
    progress: bool = False,
) -> EncodeResult:
    """Encode RGB uint8 frames (H, W, 3) to ``out`` (seekable). ``num_frames`` may be None (unknown)."""
    period, t_n, steps = coding_settings(model, quality, intra_period, t_n, steps)
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InputError(f"{width}x{height} is outside the 1..{MAX_SIDE} pixels a side gnvc codes")
    fps = Fraction(fps).limit_denominator(MAX_FPS_DEN)
    header = Header(
        profile=model.name, weights_hash=model.weights_hash, width=width, height=height,
        frames=int(num_frames or 0), fps_num=fps.numerator, fps_den=fps.denominator, quality=int(quality),
        t_n=t_n, steps=steps, seed=int(seed) & 0xFFFFFFFF, intra_period=period,
    )  # fmt: skip
    device = model_device(model)
    vae, codec = model.vae.stream_encoder(), model.codec
    start_pos = out.tell()
    writer = ContainerWriter(out, header)
    timings: dict[str, float] = {}
    latents: list[torch.Tensor] = []
    state = {"latents_in_segment": 0, "context": None, "frames": 0}

    def emit(chunk: list[np.ndarray], first_frame: int) -> None:
        t0 = time.perf_counter()
        x = frames_to_tensor(np.stack([pad_frame(f) for f in chunk]), device)
        latent = vae.push(x)[:, :, 0]
        t1 = time.perf_counter()
        intra = state["context"] is None
        strings, l_int, state["context"] = codec.code_frame(latent, quality, state["context"])
        timings["vae_encode"] = timings.get("vae_encode", 0.0) + t1 - t0
        timings["latent_codec"] = timings.get("latent_codec", 0.0) + time.perf_counter() - t1
        writer.write_record(INTRA if intra else INTER, latent_crc(l_int), strings, first_frame)
        if keep_latents:
            latents.append(from_fixed(l_int).cpu())
        state["latents_in_segment"] += 1
        if period and state["latents_in_segment"] == period:  # the next frame starts a new segment
            state["latents_in_segment"], state["context"] = 0, None
            vae.reset()

    t_start = time.perf_counter()
    chunk: list[np.ndarray] = []
    chunk_start = 0
    bar = tqdm(total=num_frames, desc="encode", unit="frame", disable=not progress, leave=False)
    for frame in frames:
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise InputError(
                f"frame {state['frames']}: expected uint8 {height}x{width}x3, got {frame.dtype} {frame.shape}"
            )
        if not chunk:
            chunk_start = state["frames"]
        chunk.append(frame)
        state["frames"] += 1
        bar.update(1)
        if len(chunk) == (1 if vae.first else TEMPORAL_FACTOR):
            emit(chunk, chunk_start)
            chunk = []
        if num_frames is not None and state["frames"] >= num_frames:
            break
    bar.close()
    if state["frames"] == 0:
        raise InputError("the video has no frames")
    if chunk:  # the video's last chunk: pad to four frames by repeating its last frame
        emit(chunk + [chunk[-1]] * (TEMPORAL_FACTOR - len(chunk)), chunk_start)
    writer.close(frames=state["frames"])
    size = out.tell() - start_pos
    return EncodeResult(header, size, time.perf_counter() - t_start, latents=latents, timings=timings)


def encode_video(model: GnvcModel, video: Video, quality: int, **kwargs) -> EncodeResult:  # noqa: ANN003
    """Encode an in-memory :class:`Video`; the result's ``data`` holds the stream's bytes."""
    buf = io.BytesIO()
    result = encode_stream(
        model, iter(video.frames), buf, width=video.width, height=video.height, fps=video.fps,
        quality=quality, num_frames=video.num_frames, **kwargs,
    )  # fmt: skip
    result.data = buf.getvalue()
    return result
