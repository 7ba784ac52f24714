"""Conventional anchors — VVC (vvenc), HEVC (x265), AV1 (SVT-AV1), AVC (x264) — low-delay, fixed QP.

Every anchor is encoded by the one static FFmpeg that ``imageio-ffmpeg`` ships (the only build here
with libvvenc), from raw YUV 4:2:0 that gnvc converts itself (BT.709 limited range,
:mod:`gnvc.io.color`), so no scaler default touches the colours. Settings common to all:
- low delay: pictures coded in display order, one intra picture at the start, no scene-cut or
  periodic intra refresh, no lookahead; x264/x265/SVT-AV1 use P pictures only; vvenc's low-delay
  configuration codes B pictures that predict from past pictures only (JVET's "LDB"), the only
  low-delay GOP it offers;
- a fixed QP per rate point (adaptive quantisation off) and single-threaded encoders, so streams
  are reproducible byte for byte;
- the rate is the size of the raw elementary stream (Annex B / AV1 OBUs) with every byte counted,
  except x264's encoder-information SEI, which is stripped (x265 is told ``info=0``; vvenc and
  SVT-AV1 write none). The stripped stream is what gets decoded and measured.
Decoding uses PyAV (FFmpeg's native H.264/HEVC/VVC decoders, libdav1d for AV1). VVC is coded from
10-bit input (libvvenc's only format): 8-bit samples are shifted left by 2 and decoded samples
rounded back (``(v + 2) >> 2``). Odd frame sizes are padded by edge replication and cropped after
decoding; the rate is still divided by the original pixel count.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from gnvc.errors import GnvcError, InputError
from gnvc.evaluation.elementary import split_obu_temporal_units, strip_encoder_info
from gnvc.io.color import rgb_to_yuv420, yuv420_to_rgb
from gnvc.io.video import Video


@dataclass(frozen=True)
class AnchorSpec:
    """How one conventional codec is run as an anchor."""

    name: str
    label: str
    encoder: str  # FFmpeg encoder
    decoder: str  # PyAV decoder
    stream_format: str  # FFmpeg muxer writing the raw elementary stream
    codec: str  # h264 | hevc | vvc | av1 (for stream surgery)
    bit_depth: int
    qp_range: tuple[int, int]
    default_qps: tuple[int, ...]
    default_preset: str
    extension: str

    def encoder_args(self, qp: int, preset: str) -> list[str]:
        """FFmpeg output options for this anchor at ``qp`` (low delay, fixed QP, one thread)."""
        if self.name == "x264":
            return [
                "-c:v",
                "libx264",
                "-preset",
                preset,
                "-qp",
                str(qp),
                "-threads",
                "1",
                "-x264-params",
                "bframes=0:keyint=infinite:scenecut=0:rc-lookahead=0:sync-lookahead=0:aud=0",
            ]
        if self.name == "x265":
            return [
                "-c:v",
                "libx265",
                "-preset",
                preset,
                "-x265-params",
                f"qp={qp}:bframes=0:keyint=-1:scenecut=0:rc-lookahead=0:info=0:hash=0:aud=0:"
                "pools=none:frame-threads=1:log-level=error",
            ]
        if self.name == "vvc":
            return [
                "-c:v",
                "libvvenc",
                "-preset",
                preset,
                "-qp",
                str(qp),
                "-qpa",
                "0",
                "-threads",
                "1",
                "-vvenc-params",
                "PicReordering=0:LookAhead=0:DecodingRefreshType=none:IntraPeriod=0:GOPSize=8:AccessUnitDelimiter=0",
            ]
        if self.name == "svtav1":
            return [
                "-c:v",
                "libsvtav1",
                "-preset",
                preset,
                "-svtav1-params",
                f"pred-struct=1:rc=0:aq-mode=0:qp={qp}:scd=0:keyint=-1:lp=1",
            ]
        raise ValueError(self.name)


ANCHORS: dict[str, AnchorSpec] = {
    a.name: a
    for a in (
        AnchorSpec(
            "vvc",
            "VVC (vvenc)",
            "libvvenc",
            "vvc",
            "vvc",
            "vvc",
            10,
            (0, 63),
            (22, 29, 36, 43, 50, 57, 63),
            "medium",
            ".266",
        ),
        AnchorSpec(
            "x265",
            "HEVC (x265)",
            "libx265",
            "hevc",
            "hevc",
            "hevc",
            8,
            (0, 51),
            (22, 27, 32, 37, 42, 47, 51),
            "medium",
            ".265",
        ),
        AnchorSpec(
            "svtav1",
            "AV1 (SVT-AV1)",
            "libsvtav1",
            "libdav1d",
            "obu",
            "av1",
            8,
            (1, 63),
            (20, 28, 36, 44, 52, 58, 63),
            "6",
            ".obu",
        ),
        AnchorSpec(
            "x264",
            "AVC (x264)",
            "libx264",
            "h264",
            "h264",
            "h264",
            8,
            (0, 51),
            (22, 27, 32, 37, 42, 47, 51),
            "medium",
            ".264",
        ),
    )
}
ANCHOR_ALIASES = {
    "vvenc": "vvc",
    "h266": "vvc",
    "hevc": "x265",
    "h265": "x265",
    "av1": "svtav1",
    "svt-av1": "svtav1",
    "avc": "x264",
    "h264": "x264",
}


def anchor_spec(name: str) -> AnchorSpec:
    """The anchor called ``name`` (aliases such as ``hevc`` or ``av1`` accepted)."""
    key = ANCHOR_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in ANCHORS:
        raise InputError(f"unknown anchor {name!r}; available: {', '.join(ANCHORS)}")
    return ANCHORS[key]


def ffmpeg_exe() -> str:
    """The static FFmpeg of imageio-ffmpeg (it carries libvvenc, libx264, libx265, libsvtav1)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise GnvcError("the anchors need imageio-ffmpeg: pip install imageio-ffmpeg==0.8.1") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class AnchorStream:
    """One encoded anchor stream and how it was made."""

    anchor: str
    qp: int
    data: bytes
    stripped_bytes: int
    seconds: float
    command: list[str] = field(default_factory=list)


def _even(video: Video) -> np.ndarray:
    f = video.frames
    return np.pad(f, ((0, 0), (0, f.shape[1] % 2), (0, f.shape[2] % 2), (0, 0)), mode="edge")


def raw_yuv420(frames: np.ndarray, bit_depth: int) -> bytes:
    """Planar 4:2:0 bytes (8-bit, or 10-bit little-endian scaled by 4) for FFmpeg's rawvideo input."""
    chunks = []
    for frame in frames:
        for plane in rgb_to_yuv420(frame):
            chunks.append(plane.tobytes() if bit_depth == 8 else (plane.astype("<u2") << 2).tobytes())
    return b"".join(chunks)


def encode_anchor(
    video: Video, anchor: str, qp: int, *, preset: str | None = None, timeout: float = 3600.0
) -> AnchorStream:
    """Encode ``video`` with ``anchor`` at ``qp``; returns the elementary stream as counted."""
    spec = anchor_spec(anchor)
    lo, hi = spec.qp_range
    if not lo <= int(qp) <= hi:
        raise InputError(f"{spec.name}: QP must be in {lo}..{hi}, got {qp}")
    frames = _even(video)
    h, w = frames.shape[1:3]
    fps = Fraction(video.fps)
    pix_fmt = "yuv420p" if spec.bit_depth == 8 else "yuv420p10le"
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-s",
        f"{w}x{h}",
        "-framerate",
        f"{fps.numerator}/{fps.denominator}",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-colorspace",
        "bt709",
        "-color_range",
        "tv",
        "-i",
        "pipe:0",
        *spec.encoder_args(int(qp), preset or spec.default_preset),
        "-f",
        spec.stream_format,
        "pipe:1",
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, input=raw_yuv420(frames, spec.bit_depth), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise GnvcError(f"{spec.name} QP {qp}: the encoder ran longer than {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not proc.stdout:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise GnvcError(f"{spec.name} QP {qp}: FFmpeg failed (exit {proc.returncode}): {' | '.join(tail)}")
    data, stripped = proc.stdout, 0
    if spec.codec in ("h264", "hevc"):
        data, stripped = strip_encoder_info(data, spec.codec)
    return AnchorStream(spec.name, int(qp), data, stripped, seconds, cmd)


def _plane(p, bit_depth: int) -> np.ndarray:
    dtype = np.uint8 if bit_depth == 8 else np.dtype("<u2")
    a = np.frombuffer(memoryview(p), dtype=dtype).reshape(p.height, -1)[:, : p.width]
    if bit_depth == 8:
        return a
    return np.clip((a.astype(np.int32) + 2) >> 2, 0, 255).astype(np.uint8)


def decode_anchor(data: bytes, anchor: str, *, width: int, height: int, fps: Fraction | int = 25) -> Video:
    """Decode an anchor's elementary stream to RGB (BT.709), cropped to ``width``×``height``."""
    import av

    spec = anchor_spec(anchor)
    ctx = av.CodecContext.create(spec.decoder, "r")
    ctx.thread_count = 1
    frames = []
    try:
        if spec.codec == "av1":
            packets = [av.Packet(tu) for tu in split_obu_temporal_units(data)]
        else:
            packets = ctx.parse(data) + ctx.parse(None)  # parse(None) flushes the parser's last unit
        decoded = [f for p in packets for f in ctx.decode(p)] + list(ctx.decode(None))
    except av.error.FFmpegError as e:
        raise GnvcError(f"{spec.name}: the stream does not decode ({e})") from None
    for f in decoded:
        name = f.format.name
        if name not in ("yuv420p", "yuv420p10le"):
            raise GnvcError(f"{spec.name}: decoder returned {name}, expected 4:2:0")
        depth = 8 if name == "yuv420p" else 10
        y, u, v = (_plane(p, depth) for p in f.planes[:3])
        frames.append(yuv420_to_rgb(y, u, v)[:height, :width])
    if not frames:
        raise GnvcError(f"{spec.name}: no frame decoded")
    return Video(np.stack(frames), Fraction(fps))
