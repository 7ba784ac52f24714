"""Streaming frame readers and writers: one frame at a time, whatever the length of the video.

The codec holds a bounded window of frames, so its IO must not hold the whole video either:
:func:`open_video` yields RGB uint8 (H, W, 3) frames one by one and :class:`FrameWriter` takes
them one by one. Each reader or writer keeps at most one frame (plus what FFmpeg buffers), and
``.y4m``/raw ``.yuv`` inputs are read with ``file.read`` per frame, seeking to ``start`` since
their frame offsets are computable. Every format has exactly one implementation here;
:mod:`gnvc.io.video` collects these frames into a whole :class:`~gnvc.io.video.Video` for the
callers that want one.

YUV is converted with BT.709 limited range, stated explicitly (see :mod:`gnvc.io.color`), on
the way in and out, so no scaler default skews the colours. Errors are :class:`InputError`
with the path in the message, raised when the file is opened whenever they can be detected
then, so a long run does not fail after minutes of work on an input it could have refused.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from gnvc.errors import DiskFullError, InputError, disk_full_as_error
from gnvc.io.color import rgb_to_yuv420, yuv420_to_rgb

IMAGE_SUFFIXES = (".png",)
Y4M_MAGIC = b"YUV4MPEG2"
PYAV_SUFFIXES = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov"}
OUTPUT_TYPES = ".mp4, .mkv, .avi, .mov, .y4m, .yuv, or a folder (no suffix) for PNGs"
_MAX_HEADER = 1 << 16  # longest y4m stream/frame header line accepted
_FPS_DENOMINATOR = 1_000_000  # as Video does: keeps exact NTSC rates, drops float noise


@dataclass(frozen=True)
class StreamInfo:
    """What a reader knows about its stream before decoding it.

    ``num_frames`` counts the frames this reader will yield (after ``start`` and ``max_frames``),
    or is None when the container does not say; the reader then counts as it goes and replaces
    its ``info`` with the actual count once the stream ends.
    """

    width: int
    height: int
    fps: Fraction
    num_frames: int | None


def _fps(value: float | Fraction, denominator: int = _FPS_DENOMINATOR) -> Fraction:
    return Fraction(value).limit_denominator(denominator)


def _natural_key(p: Path) -> list:
    """``frame2`` before ``frame10``: image sequences are rarely zero-padded consistently."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _yuv420_frame_size(width: int, height: int) -> tuple[int, int]:
    """(luma bytes, bytes of one chroma plane) of an 8-bit 4:2:0 frame; odd sizes round chroma up."""
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


def _rgb_to_planes(frame: np.ndarray) -> bytes:
    y, u, v = rgb_to_yuv420(frame)
    return y.tobytes() + u.tobytes() + v.tobytes()


def _remaining(total: int, start: int, max_frames: int | None) -> int:
    n = total - start
    return min(n, max_frames) if max_frames is not None else n


def _past_end(path: Path, start: int, total: int) -> InputError:
    return InputError(f"{path}: start frame {start} is past the end of the video ({total} frames)")


# ---------------------------------------------------------------------------------------------
# Readers


class FrameReader(abc.ABC):
    """An iterator of RGB uint8 (H, W, 3) frames and a context manager that releases the file.

    Iterating is single-pass, as the underlying file is read sequentially; the file is released
    once the stream ends or on :meth:`close`, whichever comes first. Use :func:`open_video`,
    which picks the subclass for the input's format.
    """

    info: StreamInfo

    def __init__(self, path: Path, info: StreamInfo, max_frames: int | None) -> None:
        self.path = path
        self.info = info
        self.frames_read = 0
        self._max_frames = max_frames
        self._frames: Iterator[np.ndarray] | None = None
        self._done = False
        self._closed = False

    @abc.abstractmethod
    def _generate(self) -> Iterator[np.ndarray]:
        """Yield frames from ``start`` on; the base class applies ``max_frames``."""

    def _release(self) -> None:  # noqa: B027 - an optional hook: readers without handles keep it
        """Close the file or container; must be idempotent."""

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._closed and not self._done:
            raise ValueError(f"{self.path}: reading from a closed FrameReader")
        if self._done:
            raise StopIteration
        if self._max_frames is not None and self.frames_read >= self._max_frames:
            self._finish()
            raise StopIteration
        if self._frames is None:
            self._frames = self._generate()
        try:
            frame = next(self._frames)
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self.close()
            raise
        self.frames_read += 1
        return frame

    def _finish(self) -> None:
        # The count is now a fact, not a container's claim: publish it.
        self._done = True
        self.info = replace(self.info, num_frames=self.frames_read)
        self.close()

    def close(self) -> None:
        """Release the file; further reads raise ValueError unless the stream had already ended."""
        if self._closed:
            return
        self._closed = True
        if self._frames is not None and hasattr(self._frames, "close"):
            self._frames.close()
        self._release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Y4MReader(FrameReader):
    """YUV4MPEG2, 8-bit 4:2:0: the stream header is parsed once, then one ``read`` per frame."""

    def __init__(self, path: Path, fps: float | None, start: int, max_frames: int | None) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - owned by the reader, closed in _release
        try:
            self._open(path, fps, start, max_frames)
        except BaseException:
            self._file.close()
            raise

    def _open(self, path: Path, fps: float | None, start: int, max_frames: int | None) -> None:
        f = self._file
        header = f.readline(_MAX_HEADER)
        if not header.startswith(Y4M_MAGIC) or not header.endswith(b"\n"):
            raise InputError(f"{path}: not a YUV4MPEG2 (.y4m) file")
        params = {t[:1]: t[1:] for t in header[len(Y4M_MAGIC) : -1].split()}
        try:
            width, height = int(params[b"W"]), int(params[b"H"])
            num, den = (int(x) for x in params.get(b"F", b"25:1").split(b":"))
        except (KeyError, ValueError):
            raise InputError(f"{path}: y4m header lacks a valid W, H or F field") from None
        cs = params.get(b"C", b"420jpeg").decode(errors="replace")
        if not cs.startswith("420") or cs.startswith("420p1"):
            raise InputError(f"{path}: y4m colourspace C{cs} unsupported (8-bit 4:2:0 only)")
        if width <= 0 or height <= 0 or width * height > 8192 * 8192 or num <= 0 or den <= 0:
            raise InputError(f"{path}: y4m header has an invalid geometry {width}x{height} @ {num}/{den}")
        ys, csz = _yuv420_frame_size(width, height)
        self._width, self._height, self._fsize = width, height, ys + 2 * csz
        data_start = f.tell()

        first = f.readline(_MAX_HEADER)
        if not first:
            raise InputError(f"{path}: no video frames could be read")
        self._check_frame_header(path, first, data_start)
        # Writers put the same "FRAME\n" before every frame; then the count and every frame's
        # offset follow from the file size. Anything else is walked header by header.
        stride = len(first) + self._fsize
        remaining = os.fstat(f.fileno()).st_size - data_start
        total = remaining // stride if remaining % stride == 0 else None
        if total is not None and start >= total:
            raise _past_end(path, start, total)
        self._index = start
        if start:
            self._seek_to(path, data_start, stride, start)
        else:
            f.seek(data_start)
        # Read the header of the first frame to yield now, so a start past the end fails here.
        self._pending = self._read_frame_header(path)
        if self._pending is None:
            raise InputError(f"{path}: start frame {start} is past the end of the video")
        num_frames = _remaining(total, start, max_frames) if total is not None else None
        rate = _fps(fps, 1001) if fps is not None else _fps(Fraction(num, den))
        super().__init__(path, StreamInfo(width, height, rate, num_frames), max_frames)

    @staticmethod
    def _check_frame_header(path: Path, line: bytes, pos: int) -> None:
        if not line.startswith(b"FRAME") or not line.endswith(b"\n"):
            raise InputError(f"{path}: corrupt y4m frame header at byte {pos}")

    def _read_frame_header(self, path: Path) -> bytes | None:
        pos = self._file.tell()
        line = self._file.readline(_MAX_HEADER)
        if not line:
            return None
        self._check_frame_header(path, line, pos)
        return line

    def _seek_to(self, path: Path, data_start: int, stride: int, start: int) -> None:
        f = self._file
        f.seek(data_start + start * stride)
        probe = f.read(len(Y4M_MAGIC))
        f.seek(data_start + start * stride)
        if probe.startswith(b"FRAME"):
            return
        # Frame headers of differing lengths (frame parameters): skip payloads header by header.
        f.seek(data_start)
        for i in range(start):
            if self._read_frame_header(path) is None:
                raise _past_end(path, start, i)
            f.seek(self._fsize, os.SEEK_CUR)

    def _generate(self) -> Iterator[np.ndarray]:
        f = self._file
        while True:
            if self._pending is None and self._read_frame_header(self.path) is None:
                return
            self._pending = None
            buf = f.read(self._fsize)
            if len(buf) < self._fsize:
                raise InputError(f"{self.path}: y4m file truncated in frame {self._index}")
            self._index += 1
            yield _planes_to_rgb(buf, self._width, self._height)

    def _release(self) -> None:
        self._file.close()


class _RawYUVReader(FrameReader):
    """Headerless yuv420p planes: the size comes from the caller and the count from the file size."""

    def __init__(
        self, path: Path, size: tuple[int, int] | None, fps: float | None, start: int, max_frames: int | None
    ) -> None:
        if size is None:
            raise InputError(f"{path}: raw .yuv needs --size WIDTHxHEIGHT (and --fps)")
        width, height = size
        if width <= 0 or height <= 0:
            raise InputError(f"{path}: invalid raw .yuv size {width}x{height}")
        ys, cs = _yuv420_frame_size(width, height)
        self._width, self._height, self._fsize = width, height, ys + 2 * cs
        total = path.stat().st_size
        if total == 0 or total % self._fsize:
            raise InputError(
                f"{path}: {total} bytes is not a whole number of yuv420p frames of {width}x{height} "
                f"({self._fsize} bytes each); check --size"
            )
        n = total // self._fsize
        if start >= n:
            raise _past_end(path, start, n)
        self._file = open(path, "rb")  # noqa: SIM115 - owned by the reader, closed in _release
        self._file.seek(start * self._fsize)
        info = StreamInfo(width, height, _fps(fps or 25, 1001), _remaining(n, start, max_frames))
        super().__init__(path, info, max_frames)

    def _generate(self) -> Iterator[np.ndarray]:
        while len(buf := self._file.read(self._fsize)) == self._fsize:
            yield _planes_to_rgb(buf, self._width, self._height)

    def _release(self) -> None:
        self._file.close()


class _PNGFolderReader(FrameReader):
    """A folder of PNGs in natural order, each image decoded only when its frame is asked for."""

    def __init__(self, path: Path, fps: float | None, start: int, max_frames: int | None) -> None:
        from PIL import Image

        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise InputError(f"{path}: no video frames could be read")
        if start >= len(files):
            raise _past_end(path, start, len(files))
        self._files = files[start:] if max_frames is None else files[start : start + max_frames]
        try:
            with Image.open(self._files[0]) as im:  # reads the header only, not the pixels
                width, height = im.size
        except OSError as e:
            raise InputError(f"{self._files[0]}: not a readable PNG image ({e})") from None
        rate = _fps(fps, 1001) if fps is not None else Fraction(25)
        super().__init__(path, StreamInfo(width, height, rate, len(self._files)), max_frames)

    def _generate(self) -> Iterator[np.ndarray]:
        from PIL import Image

        for f in self._files:
            try:
                with Image.open(f) as im:
                    frame = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise InputError(f"{f}: not a readable PNG image ({e})") from None
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise InputError(f"{f}: size {frame.shape[1]}x{frame.shape[0]} differs from the first frame")
            yield frame


class _PyAVReader(FrameReader):
    """Anything FFmpeg demuxes and decodes; frames before ``start`` are decoded and dropped.

    The first frame to yield is decoded when the file is opened (and kept, undecoded to RGB),
    so an undecodable file or a start past the end fails at open time, and the frame size is
    the decoded one rather than a container's claim.
    """

    def __init__(self, path: Path, fps: float | None, start: int, max_frames: int | None) -> None:
        import av

        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise InputError(f"{path}: not a video file PyAV can read ({e})") from None
        try:
            self._open(path, fps, start, max_frames)
        except BaseException:
            self._container.close()
            raise

    def _open(self, path: Path, fps: float | None, start: int, max_frames: int | None) -> None:
        import av

        if not self._container.streams.video:
            raise InputError(f"{path}: the file has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._decoded = self._container.decode(stream)
        decoded = 0
        try:
            for frame in self._decoded:
                if decoded == start:
                    self._pending = frame
                    break
                decoded += 1
            else:
                if decoded == 0:
                    raise InputError(f"{path}: no video frames could be read")
                raise _past_end(path, start, decoded)
        except av.error.FFmpegError as e:
            if decoded == 0:
                raise InputError(f"{path}: video could not be decoded ({e})") from None
            raise InputError(f"{path}: decoding failed after {decoded} frames, before start frame {start}") from None
        claimed = stream.frames  # 0 when the container does not say
        num_frames = _remaining(claimed, start, max_frames) if claimed > start else None
        claimed_rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        rate = _fps(fps, 1001) if fps is not None else _fps(claimed_rate)
        info = StreamInfo(self._pending.width, self._pending.height, rate, num_frames)
        super().__init__(path, info, max_frames)

    def _to_rgb(self, frame) -> np.ndarray:
        # Explicit BT.709 limited range: never the scaler's BT.601 default.
        rgb = frame.reformat(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG").to_ndarray()
        if rgb.shape[:2] != (self.info.height, self.info.width):
            raise InputError(
                f"{self.path}: frame {self.frames_read} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"not {self.info.width}x{self.info.height} like the first"
            )
        return rgb

    def _generate(self) -> Iterator[np.ndarray]:
        import av

        pending, self._pending = self._pending, None
        yield self._to_rgb(pending)
        del pending
        try:
            for frame in self._decoded:
                yield self._to_rgb(frame)
        except av.error.FFmpegError:
            return  # a damaged tail ends the stream; the frames before it are good

    def _release(self) -> None:
        self._pending = None
        self._container.close()


def open_video(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    start: int = 0,
    max_frames: int | None = None,
) -> FrameReader:
    """Open a PNG folder, ``.y4m``, raw ``.yuv`` (yuv420p, needs ``size=(W, H)``) or anything PyAV opens.

    Frames before ``start`` are skipped: by seeking for ``.y4m``/``.yuv`` (their frame offsets
    are computable), by decoding and dropping for PyAV inputs. At most ``max_frames`` are
    yielded. ``fps`` overrides the stream's rate (raw ``.yuv`` defaults to 25). Errors are
    :class:`InputError` naming the path, raised here whenever they are detectable before reading
    frames: a missing file, not a video, a bad y4m header, a raw ``.yuv`` whose size is not a
    whole number of frames, or a ``start`` past the end when the count is known.
    """
    path = Path(path)
    if start < 0:
        raise InputError(f"{path}: start frame must be ≥ 0, got {start}")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"{path}: max_frames must be ≥ 1 (or None for all), got {max_frames}")
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        return _PNGFolderReader(path, fps, start, max_frames)
    suffix = path.suffix.lower()
    if suffix == ".y4m":
        return _Y4MReader(path, fps, start, max_frames)
    if suffix == ".yuv":
        return _RawYUVReader(path, size, fps, start, max_frames)
    return _PyAVReader(path, fps, start, max_frames)


# ---------------------------------------------------------------------------------------------
# Writers


def _output_kind(path: Path) -> str:
    """``"png"``, ``"y4m"``, ``"yuv"`` or ``"pyav"`` for an output path, or InputError."""
    if path.name in ("", ".", ".."):
        raise InputError(f"{path}: the output needs a file or folder name")
    if path.is_dir():
        return "png"  # an existing folder is replaced by a folder of PNGs, whatever its name
    suffix = path.suffix.lower()
    if suffix == "":
        if path.exists():
            raise InputError(f"{path}: exists and is not a folder; a path without suffix means a folder of PNGs")
        return "png"
    if suffix in (".y4m", ".yuv"):
        return suffix[1:]
    if suffix in PYAV_SUFFIXES:
        return "pyav"
    raise InputError(f"{path}: unknown output type {suffix!r}; use {OUTPUT_TYPES}")


def check_output_path(path: str | Path) -> None:
    """Refuse an output that cannot be written, before any decoding spends time on it.

    Supported: ``.mp4``/``.mkv``/``.avi``/``.mov`` (H.264 via PyAV's libx264), ``.y4m``, ``.yuv``
    (raw yuv420p) and a folder (no suffix, or an existing folder) of PNGs. The parent folder must
    exist: creating folders is left to the caller, so a typo in the path is not silently honoured.
    """
    path = Path(path)
    kind = _output_kind(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{path}: the output folder {parent} does not exist")
    if kind == "pyav":
        import av

        try:
            av.codec.Codec("libx264", "w")
        except Exception as e:  # the FFmpeg build lacks the encoder
            raise InputError(f"{path}: this PyAV/FFmpeg has no libx264 encoder ({e}); write .y4m instead") from None


class _Sink(abc.ABC):
    """Writes frames of one format to the temporary path; :class:`FrameWriter` publishes it."""

    @abc.abstractmethod
    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 (H, W, 3) frame."""

    def finish(self) -> None:  # noqa: B027 - an optional hook
        """Complete the file (trailer, flush) so it can be published."""

    def discard(self) -> None:  # noqa: B027 - an optional hook
        """Release handles without completing; the temporary is removed by the writer."""


class _Y4MSink(_Sink):
    def __init__(self, tmp: Path, width: int, height: int, fps: Fraction) -> None:
        self._file = open(tmp, "wb")  # noqa: SIM115 - closed in finish/discard
        self._file.write(
            b"%s W%d H%d F%d:%d Ip A1:1 C420jpeg\n" % (Y4M_MAGIC, width, height, fps.numerator, fps.denominator)
        )

    def write(self, frame: np.ndarray) -> None:
        self._file.write(b"FRAME\n")
        self._file.write(_rgb_to_planes(frame))

    def finish(self) -> None:
        self._file.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # close flushes: on a full disk it fails again; the file goes anyway
            self._file.close()


class _RawYUVSink(_Y4MSink):
    def __init__(self, tmp: Path, width: int, height: int, fps: Fraction) -> None:
        self._file = open(tmp, "wb")  # noqa: SIM115 - closed in finish/discard

    def write(self, frame: np.ndarray) -> None:
        self._file.write(_rgb_to_planes(frame))


class _PNGSink(_Sink):
    def __init__(self, tmp: Path) -> None:
        tmp.mkdir()
        self._dir, self._count = tmp, 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        self._count += 1
        Image.fromarray(frame).save(self._dir / f"frame_{self._count:05d}.png")


class _PyAVSink(_Sink):
    """H.264 (yuv420p, or yuv444p for odd sizes), BT.709 tagged and converted, crf 12 by default."""

    def __init__(self, tmp: Path, fmt: str, width: int, height: int, fps: Fraction, crf: int) -> None:
        import av

        # The temporary's suffix is not the container's, so the muxer is named explicitly.
        self._container = av.open(str(tmp), "w", format=fmt)
        try:
            self._pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
            stream = self._container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, self._pix_fmt
            stream.options = {"crf": str(crf), "preset": "medium"}
            stream.codec_context.colorspace = 1  # AVCOL_SPC_BT709
            stream.codec_context.color_range = 1  # AVCOL_RANGE_MPEG
            self._stream = stream
        except BaseException:
            self._container.close()
            raise

    def write(self, frame: np.ndarray) -> None:
        import av

        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf = vf.reformat(format=self._pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def finish(self) -> None:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # may flush (and fail again on a full disk): the file goes anyway
            self._container.close()


class FrameWriter:
    """Write RGB uint8 (H, W, 3) frames one at a time; the output appears whole or not at all.

    Frames go to a temporary sibling (``.<name>.tmp-<pid>``, a file or folder in the output's
    folder, so the final rename stays on one filesystem) that :meth:`close` renames onto the
    output with ``os.replace``; :meth:`abort` removes it and never touches the output. Used as a
    context manager, it closes on success and aborts on an exception. The format follows the
    path as in :func:`check_output_path`; ``crf`` sets the H.264 quality of PyAV outputs. A full
    disk (or a file-size limit) aborts the writer and raises :class:`~gnvc.errors.DiskFullError`.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: Fraction, crf: int = 12) -> None:
        self.path = Path(path)
        check_output_path(self.path)
        kind = _output_kind(self.path)
        if width <= 0 or height <= 0:
            raise InputError(f"{self.path}: invalid frame size {width}x{height}")
        self.width, self.height, self.fps = width, height, _fps(fps)
        self.frames_written = 0
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}"
        _remove(self._tmp)  # left by a crashed run of a process with our pid
        self._open = False
        try:
            with disk_full_as_error(self.path):
                if kind == "png":
                    self._sink: _Sink = _PNGSink(self._tmp)
                elif kind == "y4m":
                    self._sink = _Y4MSink(self._tmp, width, height, self.fps)
                elif kind == "yuv":
                    self._sink = _RawYUVSink(self._tmp, width, height, self.fps)
                else:
                    fmt = PYAV_SUFFIXES[self.path.suffix.lower()]
                    self._sink = _PyAVSink(self._tmp, fmt, width, height, self.fps, crf)
        except BaseException:
            _remove(self._tmp)
            raise
        self._open = True

    def write(self, frame: np.ndarray) -> None:
        """Append one frame; it must be uint8 of shape (height, width, 3)."""
        if not self._open:
            raise ValueError(f"{self.path}: writing to a closed FrameWriter")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise InputError(
                f"{self.path}: frames must be uint8 ({self.height}, {self.width}, 3), "
                f"got {frame.dtype} {tuple(frame.shape)}"
            )
        try:
            with disk_full_as_error(self.path):
                self._sink.write(frame)
        except DiskFullError:
            self.abort()  # nothing half-written stays behind, even without a ``with`` block
            raise
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and publish it atomically; with no frames written, abort and refuse."""
        if not self._open:
            return
        if self.frames_written == 0:
            self.abort()
            raise InputError(f"{self.path}: no frames were written; the output was not created")
        self._open = False
        try:
            with disk_full_as_error(self.path):
                self._sink.finish()
                self._publish()
        finally:
            _remove(self._tmp)

    def abort(self) -> None:
        """Drop what was written: the temporary is removed and the output path is left as it was."""
        if not self._open:
            return
        self._open = False
        try:
            self._sink.discard()
        finally:
            _remove(self._tmp)

    def _publish(self) -> None:
        if self._tmp.is_dir() and self.path.is_dir():
            # os.replace cannot replace a non-empty folder: move the old one aside first.
            old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
            _remove(old)
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.path)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
