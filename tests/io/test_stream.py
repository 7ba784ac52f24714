"""Streaming frame IO: exact round trips, start/max_frames, bounded memory, atomic outputs, clear errors."""

from __future__ import annotations

import os
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gnvc.errors import InputError
from gnvc.io import FrameWriter, StreamInfo, check_output_path, open_video
from gnvc.io.color import rgb_to_yuv420, yuv420_to_rgb
from gnvc.io.video import Video, read_video, write_video


def make_frames(n: int, height: int, width: int) -> np.ndarray:
    """A smooth gradient that drifts, plus a bright square moving across it: (n, H, W, 3) uint8."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    side = max(3, min(height, width) // 4)
    out = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        out[t, ..., 0] = 20 + 180 * xx / max(width - 1, 1) + t
        out[t, ..., 1] = 30 + 150 * yy / max(height - 1, 1)
        out[t, ..., 2] = 90 + 60 * (xx + yy) / (width + height) + 2 * t
        x0, y0 = (3 * t) % (width - side), (2 * t) % (height - side)
        out[t, y0 : y0 + side, x0 : x0 + side] = (235, 40, 200)
    return out


def yuv420_round_trip(frames: np.ndarray) -> np.ndarray:
    """What a lossless 4:2:0 file gives back: the project's BT.709 conversion there and back."""
    return np.stack([yuv420_to_rgb(*rgb_to_yuv420(f)) for f in frames])


def write_frames(path: Path, frames: np.ndarray, fps: Fraction = Fraction(25)) -> None:
    with FrameWriter(path, width=frames.shape[2], height=frames.shape[1], fps=fps) as w:
        for f in frames:
            w.write(f)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def read_all(path: Path, **kw) -> tuple[np.ndarray, StreamInfo]:
    with open_video(path, **kw) as r:
        frames = np.stack(list(r))
    return frames, r.info


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --- Round trips ---------------------------------------------------------------------------------

LOSSLESS = [("clip.y4m", 64, 48), ("odd.y4m", 33, 17), ("clip.yuv", 64, 48), ("odd.yuv", 33, 17)]


@pytest.mark.parametrize("name,width,height", LOSSLESS)
def test_yuv_formats_round_trip_exactly(tmp_path, name, width, height):
    frames = make_frames(7, height, width)
    path = tmp_path / name
    write_frames(path, frames, Fraction(30000, 1001))
    kw = {"size": (width, height), "fps": 30000 / 1001} if name.endswith(".yuv") else {}
    back, info = read_all(path, **kw)
    np.testing.assert_array_equal(back, yuv420_round_trip(frames))
    assert info == StreamInfo(width, height, Fraction(30000, 1001), 7)


def test_y4m_header_and_frame_layout(tmp_path):
    path = tmp_path / "a.y4m"
    write_frames(path, make_frames(2, 17, 33), Fraction(24))
    data = path.read_bytes()
    header = b"YUV4MPEG2 W33 H17 F24:1 Ip A1:1 C420jpeg\n"
    assert data.startswith(header + b"FRAME\n")
    assert len(data) == len(header) + 2 * (6 + 33 * 17 + 2 * 17 * 9)


@pytest.mark.parametrize("width,height", [(64, 48), (33, 17)])
def test_png_folder_round_trips_exactly(tmp_path, width, height):
    frames = make_frames(5, height, width)
    path = tmp_path / "pngs"
    write_frames(path, frames)
    assert sorted(p.name for p in path.iterdir()) == [f"frame_{i:05d}.png" for i in range(1, 6)]
    back, info = read_all(path)
    np.testing.assert_array_equal(back, frames)
    assert info == StreamInfo(width, height, Fraction(25), 5)


@pytest.mark.parametrize("name,width,height", [("clip.mp4", 64, 48), ("odd.mkv", 33, 17), ("clip.mov", 64, 48)])
def test_pyav_round_trip_within_tolerance(tmp_path, name, width, height):
    frames = make_frames(8, height, width)
    path = tmp_path / name
    write_frames(path, frames, Fraction(25))
    back, info = read_all(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    # H.264 at crf 12 plus 4:2:0 at the square's sharp edges (the exact 4:2:0 round trip alone is ~35 dB).
    assert psnr(back, frames) > 30, psnr(back, frames)
    assert np.abs((back.astype(np.float64) - frames).mean(axis=(0, 1, 2))).max() < 2  # no colour bias
    # A flat saturated colour: a BT.601/709 or range mix-up would be off by far more than 3 levels.
    flat = np.full((3, height, width, 3), (200, 30, 90), np.uint8)
    write_frames(path, flat)
    back, _ = read_all(path)
    assert np.abs(back.astype(int) - flat).max() <= 3, back[0, 0, 0]
    assert (info.width, info.height, info.fps, info.num_frames) == (width, height, Fraction(25), 8)


def test_png_folder_natural_order_and_size_check(tmp_path):
    from PIL import Image

    frames = make_frames(3, 16, 20)
    for i, name in enumerate(["f2.png", "f10.png", "f1.png"]):
        Image.fromarray(frames[[1, 2, 0][i]]).save(tmp_path / name)
    back, _ = read_all(tmp_path)
    np.testing.assert_array_equal(back, frames)
    Image.fromarray(make_frames(1, 10, 20)[0]).save(tmp_path / "f11.png")
    with open_video(tmp_path) as r, pytest.raises(InputError, match="f11.png: size 20x10 differs from the first"):
        list(r)


# --- start and max_frames ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c.y4m", "c.yuv", "pngs", "c.mp4"])
def test_start_and_max_frames(tmp_path, name):
    path = tmp_path / name
    write_frames(path, make_frames(12, 48, 64))
    kw = {"size": (64, 48)} if name.endswith(".yuv") else {}
    whole = read_video(path, **kw).frames
    assert len(whole) == 12
    for start, max_frames, expect in [(0, 3, 3), (4, 5, 5), (9, 10, 3), (11, None, 1), (5, None, 7)]:
        with open_video(path, start=start, max_frames=max_frames, **kw) as r:
            got = list(r)
            assert r.info.num_frames == expect  # known up front for these files, and confirmed at the end
        assert len(got) == expect
        np.testing.assert_array_equal(np.stack(got), whole[start : start + expect])


def test_y4m_with_frame_parameters_is_walked_header_by_header(tmp_path):
    frames = make_frames(6, 16, 24)
    path = tmp_path / "params.y4m"
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W24 H16 F25:1 C420jpeg\n")
        for i, frame in enumerate(frames):
            y, u, v = rgb_to_yuv420(frame)
            f.write(b"FRAME Ip\n" if i % 2 else b"FRAME\n")
            f.write(y.tobytes() + u.tobytes() + v.tobytes())
    with open_video(path, start=3, max_frames=2) as r:
        assert r.info.num_frames is None  # offsets are not uniform: the count is not known up front
        got = np.stack(list(r))
        assert r.info.num_frames == 2 and r.frames_read == 2
    np.testing.assert_array_equal(got, yuv420_round_trip(frames[3:5]))
    with pytest.raises(InputError, match="past the end"):
        open_video(path, start=6)


@pytest.fixture(scope="module")
def long_y4m(tmp_path_factory) -> Path:
    """200 frames of 256×256 (about 20 MB), written plane by plane; frame t's luma encodes t."""
    path = tmp_path_factory.mktemp("long") / "long.y4m"
    yy, xx = np.mgrid[0:256, 0:256]
    u = np.full((128, 128), 100, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W256 H256 F25:1 Ip A1:1 C420jpeg\n")
        for t in range(200):
            y = (16 + (xx + yy + t) % 200).astype(np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + u + bytes([128 + t % 50]) * (128 * 128))
    return path


def test_long_y4m_window_matches_whole_read(long_y4m):
    whole = read_video(long_y4m).frames
    assert whole.shape == (200, 256, 256, 3)
    with open_video(long_y4m, start=150, max_frames=5) as r:
        assert r.info.num_frames == 5
        got = np.stack(list(r))
    np.testing.assert_array_equal(got, whole[150:155])
    assert not np.array_equal(whole[150], whole[151])


def test_long_y4m_is_never_read_whole(long_y4m, monkeypatch):
    def refuse(self):
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    file_size = long_y4m.stat().st_size
    planes = (np.zeros((256, 256), np.uint8), np.zeros((128, 128), np.uint8), np.zeros((128, 128), np.uint8))
    tracemalloc.start()
    try:
        yuv420_to_rgb(*planes)
        _, one_frame = tracemalloc.get_traced_memory()  # the float64 temporaries of one conversion
        tracemalloc.reset_peak()
        with open_video(long_y4m, start=150, max_frames=5) as r:
            for frame in r:
                assert frame.shape == (256, 256, 3)
        with open_video(long_y4m) as r:  # every frame, one at a time
            count = sum(1 for _ in r)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200
    # One frame's conversion and its bytes, never the 20 MB file (nor a growing list of frames).
    assert peak < one_frame + 1_000_000, (peak, one_frame)
    assert peak < file_size / 1.5, (peak, file_size)


# --- Atomic outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o.y4m", "o.yuv", "o.mp4", "pngs"])
def test_exception_inside_with_leaves_nothing(tmp_path, name):
    path = tmp_path / name
    frames = make_frames(3, 48, 64)
    with pytest.raises(RuntimeError, match="boom"), FrameWriter(path, width=64, height=48, fps=Fraction(25)) as w:
        w.write(frames[0])
        w.write(frames[1])
        assert not path.exists()
        # The temporary sibling (an MP4 muxer may create it only once the encoder emits packets).
        assert set(leftovers(tmp_path, set())) <= {f".{name}.tmp-{os.getpid()}"}
        raise RuntimeError("boom")
    assert leftovers(tmp_path, set()) == []


@pytest.mark.parametrize("name", ["o.y4m", "pngs"])
def test_abort_keeps_and_close_replaces_an_existing_output(tmp_path, name):
    path = tmp_path / name
    old, new = make_frames(2, 16, 24), make_frames(3, 16, 24)[::-1]
    write_frames(path, old)
    with pytest.raises(KeyboardInterrupt), FrameWriter(path, width=24, height=16, fps=Fraction(25)) as w:
        w.write(new[0])
        raise KeyboardInterrupt
    assert len(read_video(path).frames) == 2  # untouched
    write_frames(path, new)
    np.testing.assert_array_equal(read_video(path).frames, read_video_expected(new, name))
    assert leftovers(tmp_path, {name}) == []


def read_video_expected(frames: np.ndarray, name: str) -> np.ndarray:
    return frames if name == "pngs" else yuv420_round_trip(frames)


def test_writer_refuses_bad_frames_and_empty_outputs(tmp_path):
    path = tmp_path / "o.y4m"

    def writer() -> FrameWriter:
        return FrameWriter(path, width=24, height=16, fps=Fraction(25))

    with pytest.raises(InputError, match=r"o.y4m: frames must be uint8 \(16, 24, 3\)"), writer() as w:
        w.write(np.zeros((16, 24, 3), np.float32))
    with pytest.raises(InputError, match=r"o.y4m: frames must be uint8"), writer() as w:
        w.write(np.zeros((24, 16, 3), np.uint8))
    with pytest.raises(InputError, match="o.y4m: no frames were written"), writer():
        pass
    assert leftovers(tmp_path, set()) == []
    w = FrameWriter(path, width=24, height=16, fps=Fraction(25))
    w.write(make_frames(1, 16, 24)[0])
    w.close()
    w.close()  # idempotent
    w.abort()  # after publishing: a no-op, the output stays
    assert path.exists()
    with pytest.raises(ValueError, match="closed"):
        w.write(make_frames(1, 16, 24)[0])


def test_write_video_and_read_video_use_the_streams(tmp_path):
    video = Video(make_frames(4, 17, 33), Fraction(50))
    write_video(tmp_path / "v.yuv", video)
    back = read_video(tmp_path / "v.yuv", size=(33, 17), fps=50)
    np.testing.assert_array_equal(back.frames, yuv420_round_trip(video.frames))
    assert back.fps == 50
    assert read_video(tmp_path / "v.yuv", size=(33, 17), max_frames=2).frames.shape == (2, 17, 33, 3)
    assert read_video(tmp_path / "v.yuv", size=(33, 17)).fps == 25


# --- Errors --------------------------------------------------------------------------------------


def test_reader_errors_name_the_path(tmp_path):
    def refused(path: Path, match: str, **kw) -> None:
        with pytest.raises(InputError, match=match) as e:
            open_video(path, **kw)
        assert str(path) in str(e.value)

    refused(tmp_path / "missing.y4m", "no such file")
    (tmp_path / "notes.mp4").write_text("this is not a video")
    refused(tmp_path / "notes.mp4", "not a video file PyAV can read")
    (tmp_path / "junk.y4m").write_bytes(b"RIFF1234" + bytes(100))
    refused(tmp_path / "junk.y4m", r"not a YUV4MPEG2 \(.y4m\) file")
    (tmp_path / "now.y4m").write_bytes(b"YUV4MPEG2 H16 F25:1\nFRAME\n")
    refused(tmp_path / "now.y4m", "lacks a valid W, H or F")
    (tmp_path / "c444.y4m").write_bytes(b"YUV4MPEG2 W16 H16 F25:1 C444\nFRAME\n")
    refused(tmp_path / "c444.y4m", "colourspace C444 unsupported")
    (tmp_path / "huge.y4m").write_bytes(b"YUV4MPEG2 W100000 H100000 F25:1\nFRAME\n")
    refused(tmp_path / "huge.y4m", "invalid geometry")
    (tmp_path / "empty.y4m").write_bytes(b"YUV4MPEG2 W16 H16 F25:1\n")
    refused(tmp_path / "empty.y4m", "no video frames")
    (tmp_path / "badframe.y4m").write_bytes(b"YUV4MPEG2 W16 H16 F25:1\nFRAMX\n" + bytes(384))
    refused(tmp_path / "badframe.y4m", "corrupt y4m frame header at byte 24")

    (tmp_path / "raw.yuv").write_bytes(bytes(32 * 32 * 3 // 2 * 2 + 7))
    refused(tmp_path / "raw.yuv", "not a whole number of yuv420p frames of 32x32.*check --size", size=(32, 32))
    refused(tmp_path / "raw.yuv", "needs --size")
    (tmp_path / "nothing").mkdir()
    refused(tmp_path / "nothing", "no video frames")
    refused(tmp_path / "raw.yuv", "start frame must be", start=-1, size=(32, 32))
    refused(tmp_path / "raw.yuv", "max_frames must be", max_frames=0, size=(32, 32))


@pytest.mark.parametrize("name", ["c.y4m", "c.yuv", "pngs", "c.mkv"])
def test_start_past_the_end_is_refused_at_open(tmp_path, name):
    path = tmp_path / name
    write_frames(path, make_frames(4, 16, 24))
    kw = {"size": (24, 16)} if name.endswith(".yuv") else {}
    with open_video(path, start=3, **kw) as r:
        assert len(list(r)) == 1
    with pytest.raises(InputError, match="start frame 4 is past the end") as e:
        open_video(path, start=4, **kw)
    assert str(path) in str(e.value)


def test_truncated_y4m_fails_in_the_frame_it_ends_in(tmp_path):
    path = tmp_path / "t.y4m"
    write_frames(path, make_frames(4, 16, 24))
    path.write_bytes(path.read_bytes()[:-100])
    with open_video(path) as r:
        assert r.info.num_frames is None  # the size is not a whole number of frames
        assert next(r).shape == (16, 24, 3)
        with pytest.raises(InputError, match="t.y4m: y4m file truncated in frame 3"):
            list(r)


def test_closed_reader_refuses_reads(tmp_path):
    path = tmp_path / "c.y4m"
    write_frames(path, make_frames(3, 16, 24))
    r = open_video(path)
    next(r)
    r.close()
    with pytest.raises(ValueError, match="closed"):
        next(r)
    with open_video(path) as r:
        assert len(list(r)) == 3
        assert list(r) == []  # single pass: an ended stream stays ended


def test_check_output_path(tmp_path):
    for ok in ("a.mp4", "a.MKV", "a.avi", "a.mov", "a.y4m", "a.yuv", "pngs"):
        check_output_path(tmp_path / ok)
    (tmp_path / "existing.d").mkdir()
    check_output_path(tmp_path / "existing.d")  # an existing folder takes PNGs
    with pytest.raises(InputError, match=r"a.gif: unknown output type '.gif'; use .mp4"):
        check_output_path(tmp_path / "a.gif")
    with pytest.raises(InputError, match="the output folder .*nowhere does not exist"):
        check_output_path(tmp_path / "nowhere" / "a.y4m")
    (tmp_path / "plainfile").write_bytes(b"")
    with pytest.raises(InputError, match="plainfile: exists and is not a folder"):
        check_output_path(tmp_path / "plainfile")
    with pytest.raises(InputError, match="unknown output type"):
        FrameWriter(tmp_path / "a.txt", width=8, height=8, fps=Fraction(25))
    assert leftovers(tmp_path, {"existing.d", "plainfile"}) == []


def test_pyav_damaged_tail_ends_the_stream_and_the_count_is_learned(tmp_path):
    path = tmp_path / "c.mkv"
    write_frames(path, make_frames(30, 48, 64))
    whole = read_video(path).frames
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with open_video(cut, start=2) as r:
        assert r.info.num_frames is None  # Matroska does not store a frame count
        got = np.stack(list(r))
        assert r.info.num_frames == len(got) == r.frames_read
    assert 0 < len(got) < 28
    np.testing.assert_array_equal(got, whole[2 : 2 + len(got)])
