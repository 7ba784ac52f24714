"""Bad input gets a clear error: corrupt/truncated/foreign streams, bad videos, missing weights."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest

from gnvc.cli import main
from gnvc.codec.container import _FIELDS, FOOTER, MAGIC, read_stream
from gnvc.errors import BitstreamError
from gnvc.io.video import Video, write_video
from gnvc.videocodec import decode_video, encode_video

from .conftest import random_video


@pytest.fixture(scope="module")
def small_stream(tiny_model) -> bytes:
    return encode_video(tiny_model, random_video(6, 32, 48), quality=2, intra_period=1).data


def test_truncation_at_every_offset_is_detected(small_stream):
    for n in range(len(small_stream)):
        with pytest.raises(BitstreamError):
            read_stream(small_stream[:n])


def test_thousand_random_bit_flips_are_detected(small_stream):
    rng = random.Random(0)
    for _ in range(1200):
        data = bytearray(small_stream)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BitstreamError):
            read_stream(bytes(data))


def test_bit_flips_through_full_decode(tiny_model, small_stream):
    rng = random.Random(1)
    for _ in range(30):
        data = bytearray(small_stream)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BitstreamError):
            decode_video(tiny_model, bytes(data))


def test_trailing_garbage_and_foreign_files(small_stream):
    with pytest.raises(BitstreamError, match="footer"):
        read_stream(small_stream + b"\0")
    with pytest.raises(BitstreamError, match="not a gnvc"):
        read_stream(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(BitstreamError):
        read_stream(b"")


def test_version_1_files_get_a_clear_message(small_stream):
    v1 = bytearray(small_stream)
    v1[4] = 1
    with pytest.raises(BitstreamError, match="format version 1 is no longer supported"):
        read_stream(bytes(v1))


def _forge_header(stream: bytes, offset_in_fields: int, fmt: str, *values) -> bytes:
    plen = stream[5]
    head_end = 6 + plen + 8 + _FIELDS.size
    head = bytearray(stream[:head_end])
    struct.pack_into(fmt, head, 6 + plen + 8 + offset_in_fields, *values)
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + stream[head_end + 4 :]


def test_absurd_header_with_valid_crc_is_refused(small_stream):
    with pytest.raises(BitstreamError, match="invalid bitstream header"):
        read_stream(_forge_header(small_stream, 0, "<HH", 60000, 60000))  # absurd size
    with pytest.raises(BitstreamError, match="invalid bitstream header"):
        read_stream(_forge_header(small_stream, 17, "<f", 1.0))  # t_N = 1
    assert small_stream.startswith(MAGIC)


def test_seek_index_pointing_outside_the_file_is_refused(tiny_model, small_stream):
    offset, magic = FOOTER.unpack(small_stream[-FOOTER.size :])
    for bad in (len(small_stream) + 100, 3, 2**63):
        forged = small_stream[: -FOOTER.size] + FOOTER.pack(bad, magic)
        with pytest.raises(BitstreamError, match="outside the file"):
            decode_video(tiny_model, forged, start=5)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_cli_errors_are_one_clear_line(capsys, tmp_path, tiny_model_dir, small_stream):
    bad = tmp_path / "bad.gnvc"
    bad.write_bytes(small_stream[:-3])
    code, _, err = _cli(capsys, "decode", str(bad), "-o", str(tmp_path / "o.y4m"), "--weights", str(tiny_model_dir))
    assert code == 2 and err.strip().startswith("error:") and "truncated" in err and "Traceback" not in err
    assert not (tmp_path / "o.y4m").exists()

    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("this is not a video")
    code, _, err = _cli(
        capsys, "encode", str(notvideo), "-o", str(tmp_path / "x.gnvc"), "--weights", str(tiny_model_dir)
    )
    assert code == 2 and "not a video file" in err

    raw = tmp_path / "clip.yuv"
    raw.write_bytes(bytes(32 * 32 * 3 // 2 * 2 + 7))
    code, _, err = _cli(
        capsys, "encode", str(raw), "-o", str(tmp_path / "x.gnvc"), "--size", "32x32", "--weights", str(tiny_model_dir)
    )
    assert code == 2 and "check --size" in err

    good = tmp_path / "good.yuv"
    good.write_bytes(bytes(32 * 32 * 3 // 2 * 2))
    code, _, err = _cli(
        capsys, "encode", str(good), "-o", str(tmp_path / "x.gnvc"), "--size", "32x32", "--weights",
        str(tmp_path / "nowhere"),
    )  # fmt: skip
    assert code == 2 and "not a gnvc model directory" in err

    for args, msg in (
        (("--t-n", "1.0"), "t_N"),
        (("--steps", "300"), "0..255"),
        (("--intra-period", "0"), "intra-period"),
    ):
        code, _, err = _cli(capsys, "encode", str(good), "-o", str(tmp_path / "x.gnvc"), "--size", "32x32", *args)
        assert code == 2 and msg in err and "Traceback" not in err

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(capsys, "encode", str(empty), "-o", str(tmp_path / "x.gnvc"), "--weights", str(tiny_model_dir))
    assert code == 2 and "no video frames" in err
    assert not (tmp_path / "x.gnvc").exists()


def test_cli_missing_default_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    video = tmp_path / "v.y4m"
    write_video(video, random_video(1, 16, 16))
    code, _, err = _cli(capsys, "encode", str(video), "-o", "x.gnvc", "--profile", "small")
    assert code == 2 and "models/small" in err and "gnvc model init" in err


def test_cli_encode_decode_info(capsys, tmp_path, tiny_model_dir):
    src = tmp_path / "in.y4m"
    video = random_video(14, 75, 100)
    write_video(src, video)
    out = tmp_path / "a.gnvc"
    code, stdout, _ = _cli(capsys, "encode", str(src), "-o", str(out), "-q", "3", "--weights", str(tiny_model_dir))
    assert code == 0
    nbytes = out.stat().st_size
    assert f"{nbytes} bytes" in stdout
    assert f"{8 * nbytes / (14 * 75 * 100):.5f} bpp" in stdout
    code, stdout, _ = _cli(capsys, "info", str(out), "--json")
    assert code == 0 and '"frames": 14' in stdout and '"quality": 3' in stdout
    for target in ("d.y4m", "d.mp4", "pngs"):
        code, _, err = _cli(capsys, "decode", str(out), "-o", str(tmp_path / target), "--weights", str(tiny_model_dir))
        assert code == 0, err
    from gnvc.io.video import read_video

    y4m = read_video(tmp_path / "d.y4m")
    assert y4m.frames.shape == (14, 75, 100, 3)
    assert read_video(tmp_path / "pngs").frames.shape == (14, 75, 100, 3)
    assert read_video(tmp_path / "d.mp4").num_frames == 14


def test_y4m_round_trip_is_close():
    video = Video(np.full((2, 10, 12, 3), (200, 30, 90), np.uint8), 30)
    from gnvc.io.color import rgb_to_yuv420, yuv420_to_rgb

    back = yuv420_to_rgb(*rgb_to_yuv420(video.frames[0]))
    assert np.abs(back.astype(int) - video.frames[0]).max() <= 2
