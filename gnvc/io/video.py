"""Read and write videos: anything PyAV opens, ``.y4m``, raw ``.yuv`` (yuv420p) and PNG folders.

Every reader returns the same :class:`Video` (RGB uint8, T×H×W×3, plus the frame rate), so the
codec, the metrics and the data pipeline never care where frames came from. YUV sources are
converted with BT.709 limited range, stated explicitly (see :mod:`gnvc.io.color`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from gnvc.errors import InputError
from gnvc.io.color import rgb_to_yuv420, yuv420_to_rgb

IMAGE_SUFFIXES = (".png",)
Y4M_MAGIC = b"YUV4MPEG2"
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


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _check_nonempty(frames: list[np.ndarray] | np.ndarray, path: Path) -> None:
    if len(frames) == 0:
        raise InputError(f"{path}: no video frames could be read")


def read_png_folder(path: Path, max_frames: int | None = None) -> Video:
    from PIL import Image

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    _check_nonempty(files, path)
    files = files[:max_frames] if max_frames else files
    frames = []
    for f in files:
        try:
            with Image.open(f) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise InputError(f"{f}: not a readable PNG image ({e})") from None
        if frames[-1].shape != frames[0].shape:
            raise InputError(f"{f}: size {frames[-1].shape[1]}x{frames[-1].shape[0]} differs from the first frame")
    return Video(np.stack(frames), Fraction(25))


def _yuv420_frame_size(width: int, height: int) -> tuple[int, int]:
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return width * height, cw * ch


def _planes_to_rgb(buf: bytes | memoryview, width: int, height: int) -> np.ndarray:
    ys, cs = _yuv420_frame_size(width, height)
    a = np.frombuffer(buf, dtype=np.uint8)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = a[:ys].reshape(height, width)
    u = a[ys : ys + cs].reshape(ch, cw)
    v = a[ys + cs : ys + 2 * cs].reshape(ch, cw)
    return yuv420_to_rgb(y, u, v)


def read_y4m(path: Path, max_frames: int | None = None) -> Video:
    data = path.read_bytes()
    nl = data.find(b"\n")
    if not data.startswith(Y4M_MAGIC) or nl < 0:
        raise InputError(f"{path}: not a YUV4MPEG2 (.y4m) file")
    params = {t[:1]: t[1:] for t in data[len(Y4M_MAGIC) : nl].split()}
    try:
        width, height = int(params[b"W"]), int(params[b"H"])
        num, den = (int(x) for x in params.get(b"F", b"25:1").split(b":"))
    except (KeyError, ValueError):
        raise InputError(f"{path}: y4m header lacks a valid W, H or F field") from None
    cs = params.get(b"C", b"420jpeg").decode()
    if not cs.startswith("420") or cs.startswith("420p1"):
        raise InputError(f"{path}: y4m colourspace C{cs} unsupported (8-bit 4:2:0 only)")
    if width <= 0 or height <= 0 or width * height > 8192 * 8192 or num <= 0 or den <= 0:
        raise InputError(f"{path}: y4m header has an invalid geometry {width}x{height} @ {num}/{den}")
    ys, csz = _yuv420_frame_size(width, height)
    frames, pos = [], nl + 1
    while pos < len(data) and (not max_frames or len(frames) < max_frames):
        end = data.find(b"\n", pos)
        if not data.startswith(b"FRAME", pos) or end < 0:
            raise InputError(f"{path}: corrupt y4m frame header at byte {pos}")
        start = end + 1
        if start + ys + 2 * csz > len(data):
            raise InputError(f"{path}: y4m file truncated in frame {len(frames)}")
        frames.append(_planes_to_rgb(memoryview(data)[start : start + ys + 2 * csz], width, height))
        pos = start + ys + 2 * csz
    _check_nonempty(frames, path)
    return Video(np.stack(frames), Fraction(num, den))


def read_raw_yuv(path: Path, size: tuple[int, int] | None, fps: float | None, max_frames: int | None = None) -> Video:
    if size is None:
        raise InputError(f"{path}: raw .yuv needs --size WIDTHxHEIGHT (and --fps)")
    width, height = size
    ys, cs = _yuv420_frame_size(width, height)
    fsize = ys + 2 * cs
    total = path.stat().st_size
    if total == 0 or total % fsize:
        raise InputError(
            f"{path}: {total} bytes is not a whole number of yuv420p frames of {width}x{height} "
            f"({fsize} bytes each); check --size"
        )
    n = total // fsize
    n = min(n, max_frames) if max_frames else n
    data = path.read_bytes()
    frames = [_planes_to_rgb(memoryview(data)[i * fsize : (i + 1) * fsize], width, height) for i in range(n)]
    return Video(np.stack(frames), Fraction(fps or 25).limit_denominator(1001))


def read_with_pyav(path: Path, max_frames: int | None = None) -> Video:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a video file PyAV can read ({e})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        try:
            for frame in container.decode(stream):
                # Explicit BT.709 limited range: never the scaler's BT.601 default.
                rgb = frame.reformat(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG")
                frames.append(rgb.to_ndarray())
                if max_frames and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as e:
            if not frames:
                raise InputError(f"{path}: video could not be decoded ({e})") from None
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    _check_nonempty(frames, path)
    return Video(np.stack(frames), Fraction(fps))


def read_video(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> Video:
    """Read a video from a PNG folder, ``.y4m``, raw ``.yuv`` (needs ``size``) or any PyAV input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        video = read_png_folder(path, max_frames)
    elif path.suffix.lower() == ".y4m":
        video = read_y4m(path, max_frames)
    elif path.suffix.lower() == ".yuv":
        video = read_raw_yuv(path, size, fps, max_frames)
    else:
        video = read_with_pyav(path, max_frames)
    if fps is not None:
        video.fps = Fraction(fps).limit_denominator(1001)
    return video


def write_png_folder(path: Path, video: Video) -> None:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(video.frames, start=1):
        Image.fromarray(frame).save(path / f"frame_{i:05d}.png")


def write_y4m(path: Path, video: Video) -> None:
    fps = video.fps
    with open(path, "wb") as f:
        f.write(
            b"%s W%d H%d F%d:%d Ip A1:1 C420jpeg\n"
            % (Y4M_MAGIC, video.width, video.height, fps.numerator, fps.denominator)
        )
        for frame in video.frames:
            y, u, v = rgb_to_yuv420(frame)
            f.write(b"FRAME\n")
            f.write(y.tobytes() + u.tobytes() + v.tobytes())


def write_with_pyav(path: Path, video: Video, crf: int = 12) -> None:
    """Write H.264 (yuv420p, or yuv444p for odd sizes), BT.709 tagged and converted."""
    import av

    odd = video.width % 2 or video.height % 2
    pix_fmt = "yuv444p" if odd else "yuv420p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=video.fps)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, pix_fmt
        stream.options = {"crf": str(crf), "preset": "medium"}
        stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709
        stream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG
        for frame in video.frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf = vf.reformat(format=pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(path: str | Path, video: Video) -> None:
    """Write by the target's form: a folder (no suffix) of PNGs, ``.y4m``, or a PyAV container."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == "" or path.is_dir():
        write_png_folder(path, video)
    elif suffix == ".y4m":
        write_y4m(path, video)
    elif suffix in (".mp4", ".mkv", ".avi", ".mov"):
        write_with_pyav(path, video)
    else:
        raise InputError(f"{path}: unknown output type {suffix!r}; use .mp4, .mkv, .y4m or a folder for PNGs")
