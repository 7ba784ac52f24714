"""Decode ``.gnvc`` to frames: records → integer-loop latent codec → windowed refinement → causal VAE.

Streaming: one record is read at a time, the refiner holds one window of latents, the VAE decoder
its feature cache, and every finished frame goes straight to ``emit``. ``start``/``frames`` decode
a range: the reader seeks to the segment (I-latent) that holds ``start`` through the seek index,
without parsing what comes before, and stops once the range is out.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from gnvc.codec.container import INTRA, MAX_STEPS, ContainerReader, Header
from gnvc.codec.integer import from_fixed
from gnvc.errors import BitstreamError, InputError
from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.refiner.stream import WindowedRefinement
from gnvc.videocodec.encoder import model_device
from gnvc.videocodec.frames import latent_bytes, latent_crc, latent_size, tensor_to_frames


@dataclass
class DecodeResult:
    header: Header
    frames: int  # frames emitted
    seconds: float
    latents_sha256: str = ""  # of every decoded integer latent (int32 LE), for cross-machine checks
    timings: dict[str, float] = field(default_factory=dict)


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


def check_range(header: Header, start: int, frames: int | None) -> int:
    """Validate a decode range; returns its end (exclusive)."""
    if start < 0 or start >= header.frames:
        raise InputError(f"--start {start} is past the end of the stream (it has {header.frames} frames)")
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be ≥ 1, got {frames}")
    return header.frames if frames is None else min(header.frames, start + frames)


_ALLOC_FAILURE = re.compile(r"can't allocate memory|out of memory|cannot allocate memory", re.IGNORECASE)


@contextmanager
def out_of_memory_as_input_error(header: Header) -> Iterator[None]:
    """An allocation that fails while decoding (a huge declared frame size, a small machine) is a user
    error with a message, not a MemoryError or a torch RuntimeError traceback."""
    try:
        yield
    except MemoryError:
        raise InputError(
            f"not enough memory to decode this {header.width}x{header.height} stream on this machine"
        ) from None
    except RuntimeError as e:
        if not _ALLOC_FAILURE.search(str(e)):
            raise
        raise InputError(
            f"not enough memory to decode this {header.width}x{header.height} stream on this device "
            f"({str(e).splitlines()[0][:160]})"
        ) from None


@contextmanager
def no_tf32(device: torch.device) -> Iterator[None]:
    """Full float32 precision for the VAE decoder and refiner on CUDA (TF32 is PyTorch's default for
    cuDNN convolutions): decoded frames then match a CPU decode within float noise."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def decode_stream(
    model: GnvcModel,
    src: BinaryIO,
    emit: Callable[[np.ndarray], None],
    *,
    steps: int | None = None,
    start: int = 0,
    frames: int | None = None,
    progress: bool = False,
) -> DecodeResult:
    """Decode ``src`` (seekable) and call ``emit`` with each RGB uint8 (H, W, 3) frame in order."""
    with torch.no_grad(), no_tf32(model_device(model)):
        return _decode(model, src, emit, steps=steps, start=start, frames=frames, progress=progress)


def _decode(
    model: GnvcModel,
    src: BinaryIO,
    emit: Callable[[np.ndarray], None],
    *,
    steps: int | None,
    start: int,
    frames: int | None,
    progress: bool,
) -> DecodeResult:
    reader = ContainerReader(src)
    h = reader.header
    reader.index()  # a truncated or damaged file is refused before the first frame comes out
    check_model_matches(model, h)
    n_steps = h.steps if steps is None else int(steps)
    if not 0 <= n_steps <= MAX_STEPS:
        raise InputError(f"refinement steps must be in 0..{MAX_STEPS}, got {n_steps}")
    end = check_range(h, start, frames)
    device = model_device(model)
    size = latent_size(h)
    vae = model.vae.stream_decoder()
    refiner = model.refiner
    window = refiner.max_latent_frames if refiner is not None else 0
    overlap = refiner.window_overlap if refiner is not None else 0
    refine = WindowedRefinement(refiner, t_n=h.t_n, steps=n_steps, seed=h.seed, window=window, overlap=overlap)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    segment = h.segment_of_frame(start)
    pos = {"frame": 0, "seg_end": 0, "emitted": 0}
    bar = tqdm(total=end - start, desc="decode", unit="frame", disable=not progress, leave=False)

    def to_pixels(latents: list[torch.Tensor]) -> None:
        for lat in latents:
            t0 = time.perf_counter()
            pixels = tensor_to_frames(vae.push(lat))
            timings["vae_decode"] = timings.get("vae_decode", 0.0) + time.perf_counter() - t0
            for frame in pixels:
                f = pos["frame"]
                if f < pos["seg_end"] and start <= f < end:
                    emit(np.ascontiguousarray(frame[: h.height, : h.width]))
                    pos["emitted"] += 1
                    bar.update(1)
                pos["frame"] += 1

    def timed_refine(fn: Callable[[], list[torch.Tensor]]) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        out = fn()
        timings["refine"] = timings.get("refine", 0.0) + time.perf_counter() - t0
        return out

    context = None
    digest = hashlib.sha256()
    with out_of_memory_as_input_error(h):
        for record in reader.records(segment):
            if record.kind == INTRA:
                to_pixels(timed_refine(refine.flush))  # the previous segment's last window
                if pos["frame"] >= end:
                    break
                pos["frame"] = segment * h.segment_frames
                pos["seg_end"] = pos["frame"] + h.segment_pixel_frames(segment)
                segment += 1
                vae.reset()
                context = None
            t0 = time.perf_counter()
            l_int, context = model.codec.decode_frame(record.streams, size, h.quality, context)
            timings["latent_decode"] = timings.get("latent_decode", 0.0) + time.perf_counter() - t0
            digest.update(latent_bytes(l_int))
            if latent_crc(l_int) != record.latent_crc:
                raise BitstreamError(
                    f"latent frame {record.latent}: decoded latents differ from the encoder's (reconstruction CRC "
                    "mismatch); the stream or the weights do not match"
                )
            latent = from_fixed(l_int).to(device).unsqueeze(2)
            to_pixels(timed_refine(lambda lat=latent, ctx=context, r=record: refine.push(
                lat, from_fixed(ctx).to(device).unsqueeze(2), r.latent)))  # fmt: skip
            if pos["frame"] >= end:
                break
        if pos["frame"] < end:
            to_pixels(timed_refine(refine.flush))
    bar.close()
    return DecodeResult(h, pos["emitted"], time.perf_counter() - t_start, digest.hexdigest(), timings)


def decode_video(
    model: GnvcModel,
    data: bytes,
    *,
    steps: int | None = None,
    start: int = 0,
    frames: int | None = None,
    progress: bool = False,
) -> Video:
    """Decode in-memory ``.gnvc`` bytes to a :class:`Video` (for evaluation and tests)."""
    out: list[np.ndarray] = []
    res = decode_stream(model, io.BytesIO(data), out.append, steps=steps, start=start, frames=frames, progress=progress)
    return Video(np.stack(out), Fraction(res.header.fps_num, res.header.fps_den))
