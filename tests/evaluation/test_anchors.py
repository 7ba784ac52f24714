"""Anchors on a real QCIF clip: low delay, exact and reproducible bytes, rate falling with QP."""

from __future__ import annotations

import av
import numpy as np
import pytest

from gnvc.errors import InputError
from gnvc.evaluation.anchors import ANCHORS, decode_anchor, encode_anchor, raw_yuv420
from gnvc.evaluation.elementary import split_annexb, split_obu_temporal_units, strip_encoder_info
from gnvc.io.video import Video
from gnvc.metrics.psnr import psnr_y

FAST = {"vvc": "faster", "svtav1": "8", "x265": "fast", "x264": "fast"}
QPS = {"vvc": (27, 42, 57), "x265": (22, 37, 51), "svtav1": (20, 44, 63), "x264": (22, 37, 51)}


def _decode_order(data: bytes, anchor: str) -> list[int]:
    """Display order of the frames, numbering packets in decoding order (a low-delay stream gives 0..n−1)."""
    spec = ANCHORS[anchor]
    ctx = av.CodecContext.create(spec.decoder, "r")
    ctx.thread_count = 1
    packets = (
        [av.Packet(t) for t in split_obu_temporal_units(data)]
        if spec.codec == "av1"
        else ctx.parse(data) + ctx.parse(None)
    )
    order = []
    for i, p in enumerate(packets):
        p.pts = p.dts = i
        order += [f.pts for f in ctx.decode(p)]
    return order + [f.pts for f in ctx.decode(None)]


@pytest.mark.parametrize("anchor", list(ANCHORS))
def test_anchor_rate_quality_and_bytes(anchor, carphone):
    streams = [encode_anchor(carphone, anchor, qp, preset=FAST[anchor]) for qp in QPS[anchor]]
    sizes = [len(s.data) for s in streams]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), f"rate must fall as QP rises: {sizes}"
    quality = []
    for s in streams:
        decoded = decode_anchor(s.data, anchor, width=176, height=144, fps=carphone.fps)
        assert decoded.frames.shape == carphone.frames.shape
        quality.append(psnr_y(carphone.frames, decoded.frames).mean())
        assert _decode_order(s.data, anchor) == list(range(carphone.num_frames))  # no reordering: low delay
    assert all(a > b for a, b in zip(quality, quality[1:])), quality
    again = encode_anchor(carphone, anchor, QPS[anchor][1], preset=FAST[anchor])
    assert again.data == streams[1].data  # single-threaded encoders: byte-identical runs


def test_reordering_would_be_detected(carphone):
    """Control for the low-delay check: x265 with B-frames reorders, and _decode_order sees it."""
    import subprocess

    from gnvc.evaluation.anchors import ffmpeg_exe

    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        "176x144",
        "-i",
        "pipe:0",
        "-c:v",
        "libx265",
        "-x265-params",
        "qp=30:bframes=3:b-adapt=0:log-level=error",
        "-f",
        "hevc",
        "pipe:1",
    ]
    data = subprocess.run(cmd, input=raw_yuv420(carphone.frames, 8), capture_output=True, check=True).stdout
    assert _decode_order(data, "x265") != list(range(carphone.num_frames))


def test_x264_info_sei_is_stripped_and_stream_unchanged_otherwise(carphone):
    s = encode_anchor(carphone, "x264", 37, preset="fast")
    assert 400 < s.stripped_bytes < 1000 and b"x264 - core" not in s.data
    # Put the SEI back from a raw encode: decoding with or without it gives the same pictures.
    import subprocess

    raw = subprocess.run(
        s.command[:-1] + ["pipe:1"], input=raw_yuv420(carphone.frames, 8), capture_output=True, check=True
    ).stdout
    assert b"x264 - core" in raw and len(raw) == len(s.data) + s.stripped_bytes
    assert strip_encoder_info(raw, "h264") == (s.data, s.stripped_bytes)
    a = decode_anchor(raw, "x264", width=176, height=144).frames
    b = decode_anchor(s.data, "x264", width=176, height=144).frames
    assert np.array_equal(a, b)
    nal_types = [u.data(s.data)[0] & 0x1F for u in split_annexb(s.data)]
    assert 6 not in nal_types and nal_types[:2] == [7, 8]  # SPS, PPS, then slices


def test_x265_and_vvc_write_no_encoder_info(carphone):
    assert b"x265 (build" not in encode_anchor(carphone, "x265", 37, preset="fast").data
    vvc = encode_anchor(Video(carphone.frames[:2], carphone.fps), "vvc", 40, preset="faster").data
    assert not any((u.data(vvc)[1] >> 3) in (23, 24) for u in split_annexb(vvc))  # no SEI NAL units


def test_odd_size_is_padded_and_cropped(carphone):
    v = Video(carphone.frames[:2, :99, :101], carphone.fps)
    s = encode_anchor(v, "x264", 20, preset="fast")
    d = decode_anchor(s.data, "x264", width=101, height=99)
    assert d.frames.shape == v.frames.shape and psnr_y(v.frames, d.frames).mean() > 35


def test_bad_qp_and_name():
    v = Video(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="QP must be in 0..51"):
        encode_anchor(v, "x264", 60)
    with pytest.raises(InputError, match="unknown anchor"):
        encode_anchor(v, "mpeg2", 30)
