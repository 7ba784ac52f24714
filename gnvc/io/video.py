"""Whole videos in memory: anything PyAV opens, ``.y4m``, raw ``.yuv`` (yuv420p) and PNG folders.

Every reader returns the same :class:`Video` (RGB uint8, T×H×W×3, plus the frame rate), so the
metrics and the evaluation never care where frames came from. The formats themselves are
implemented once, as streams, in :mod:`gnvc.io.stream`; the functions here collect a stream's
frames into a :class:`Video` or feed a :class:`Video` to a writer. YUV sources are converted
with BT.709 limited range, stated explicitly (see :mod:`gnvc.io.color`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from gnvc.errors import InputError
from gnvc.io.stream import (
    IMAGE_SUFFIXES,
    OUTPUT_TYPES,
    Y4M_MAGIC,
    FrameReader,
    FrameWriter,
    _output_kind,
    _PNGFolderReader,
    _PyAVReader,
    _RawYUVReader,
    _Y4MReader,
    open_video,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FRAMES",
    "Y4M_MAGIC",
    "Video",
    "parse_size",
    "read_png_folder",
    "read_raw_yuv",
    "read_video",
    "read_with_pyav",
    "read_y4m",
    "write_png_folder",
    "write_video",
    "write_with_pyav",
    "write_y4m",
]

MAX_FRAMES = 1_000_000


@dataclass
class Video:
    """Frames as RGB uint8 of shape (T, H, W, 3), and their rate in frames per second."""

    frames: np.ndarray
    fps: Fraction = Fraction(25)

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise InputError(f"video frames must be uint8 (T, H, W, 3), got {f.dtype} {tuple(f.shape)}")
        self.fps = Fraction(self.fps).limit_denominator(1_000_000)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def parse_size(text: str) -> tuple[int, int]:
    """``"352x288"`` → (352, 288), with a clear error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise InputError(f"size must look like WIDTHxHEIGHT (e.g. 352x288), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _collect(reader: FrameReader) -> Video:
    with reader:
        frames = list(reader)
        fps = reader.info.fps
    if not frames:  # open_video refuses empty inputs; kept so Video never sees T=0 from a reader
        raise InputError(f"{reader.path}: no video frames could be read")
    return Video(np.stack(frames), fps)


def read_png_folder(path: Path, max_frames: int | None = None) -> Video:
    return _collect(_PNGFolderReader(Path(path), None, 0, max_frames or None))


def read_y4m(path: Path, max_frames: int | None = None) -> Video:
    return _collect(_Y4MReader(Path(path), None, 0, max_frames or None))


def read_raw_yuv(path: Path, size: tuple[int, int] | None, fps: float | None, max_frames: int | None = None) -> Video:
    return _collect(_RawYUVReader(Path(path), size, fps, 0, max_frames or None))


def read_with_pyav(path: Path, max_frames: int | None = None) -> Video:
    return _collect(_PyAVReader(Path(path), None, 0, max_frames or None))


def read_video(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> Video:
    """Read a whole video from a PNG folder, ``.y4m``, raw ``.yuv`` (needs ``size``) or any PyAV input.

    The frames of :func:`~gnvc.io.stream.open_video`, collected; ``max_frames`` of 0 or None reads all.
    """
    return _collect(open_video(path, size=size, fps=fps, max_frames=max_frames or None))


def _write_all(path: Path, video: Video, crf: int = 12, kind: str | None = None) -> None:
    if kind is not None and _output_kind(path) != kind:
        raise InputError(f"{path}: the path does not name a {kind} output; use {OUTPUT_TYPES}")
    with FrameWriter(path, width=video.width, height=video.height, fps=video.fps, crf=crf) as writer:
        for frame in video.frames:
            writer.write(frame)


def write_png_folder(path: Path, video: Video) -> None:
    """``frame_00001.png``... in a folder (a path without suffix, or an existing folder), replaced whole."""
    _write_all(Path(path), video, kind="png")


def write_y4m(path: Path, video: Video) -> None:
    _write_all(Path(path), video, kind="y4m")


def write_with_pyav(path: Path, video: Video, crf: int = 12) -> None:
    """Write H.264 (yuv420p, or yuv444p for odd sizes), BT.709 tagged and converted."""
    _write_all(Path(path), video, crf, kind="pyav")


def write_video(path: str | Path, video: Video) -> None:
    """Write by the target's form: a folder (no suffix) of PNGs, ``.y4m``, ``.yuv`` or a PyAV container.

    A :class:`~gnvc.io.stream.FrameWriter` fed with the frames, so the output appears atomically.
    """
    _write_all(Path(path), video)
