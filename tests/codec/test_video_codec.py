"""End-to-end encode → decode (format v2): one P-chain per video, seeking, odd shapes, refinement windows."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from gnvc.codec.container import INTER, INTRA, read_stream
from gnvc.errors import BitstreamError, InputError
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_stream, decode_video, encode_video
from gnvc.videocodec.frames import tensor_to_frames

from .conftest import random_video


def test_decode_reproduces_encoder_reconstruction_on_real_clip(tiny_model, carphone):
    result = encode_video(tiny_model, carphone, quality=3, keep_latents=True)
    decoded = decode_video(tiny_model, result.data, steps=0)  # the latent decode, refinement off
    # The encoder's own view of what the decoder gets: VAE decode of its reconstructed latents.
    with torch.no_grad():
        expected = tensor_to_frames(tiny_model.vae.decode(torch.stack(result.latents, 2)))
    expected = expected[: carphone.num_frames, : carphone.height, : carphone.width]
    assert decoded.frames.shape == carphone.frames.shape
    assert np.array_equal(decoded.frames, expected)
    assert decoded.fps == carphone.fps


def test_bpp_counts_every_byte(tiny_model, carphone):
    result = encode_video(tiny_model, carphone, quality=1)
    assert result.num_bytes == len(result.data)
    assert result.bpp == 8 * len(result.data) / (carphone.num_frames * carphone.width * carphone.height)


def test_rate_increases_with_quality_index(tiny_model, carphone):
    sizes = [len(encode_video(tiny_model, carphone, quality=q).data) for q in range(tiny_model.codec.num_qualities)]
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes


@pytest.mark.parametrize(("frames", "height", "width"), [(1, 75, 100), (14, 75, 100), (5, 32, 48), (18, 40, 40)])
def test_geometry_round_trips(tiny_model, frames, height, width):
    video = random_video(frames, height, width)
    result = encode_video(tiny_model, video, quality=2)
    header, records, index = read_stream(result.data)
    assert (header.frames, header.height, header.width) == (frames, height, width)
    assert len(records) == 1 + -(-(frames - 1) // 4)  # one P-chain: 1 + ceil((T − 1)/4) latents
    assert [r.kind for r in records] == [INTRA] + [INTER] * (len(records) - 1)
    assert len(index) == 1
    decoded = decode_video(tiny_model, result.data)
    assert decoded.frames.shape == video.frames.shape


def test_intra_period_segments_and_seek_index(tiny_model):
    video = random_video(23, 32, 48, seed=2)
    result = encode_video(tiny_model, video, quality=2, intra_period=2)  # a seek point every 5 frames
    header, records, index = read_stream(result.data)
    assert header.segment_frames == 5 and header.num_segments == 5
    assert [e.first_frame for e in index] == [0, 5, 10, 15, 20]
    assert [r.kind for r in records] == [INTRA, INTER] * 4 + [INTRA, INTER]
    full = decode_video(tiny_model, result.data, steps=0)
    for start, n in ((0, 3), (7, 5), (15, 8), (22, 1)):
        part = decode_video(tiny_model, result.data, steps=0, start=start, frames=n)
        assert np.array_equal(part.frames, full.frames[start : start + n])


def test_seek_gives_the_same_refined_frames(tiny_model):
    """Refinement noise is fixed per latent position: a segment decodes identically from a seek."""
    video = random_video(15, 32, 32, seed=4)
    data = encode_video(tiny_model, video, quality=1, intra_period=2, steps=2).data
    full = decode_video(tiny_model, data)
    assert np.array_equal(decode_video(tiny_model, data, start=10).frames, full.frames[10:])


def test_seek_reads_only_what_it_needs(tiny_model):
    """Decoding from a late segment never parses the earlier records (their bytes are garbage here)."""
    video = random_video(21, 32, 32, seed=5)
    data = bytearray(encode_video(tiny_model, video, quality=1, intra_period=2).data)
    _, _, index = read_stream(bytes(data))
    full = decode_video(tiny_model, bytes(data), steps=0)
    data[index[1].offset : index[3].offset] = bytes(index[3].offset - index[1].offset)  # wipe segments 1..2
    assert np.array_equal(decode_video(tiny_model, bytes(data), steps=0, start=16).frames, full.frames[16:])
    with pytest.raises(BitstreamError):
        decode_video(tiny_model, bytes(data), steps=0)


def test_refinement_windows_cover_long_sequences(tiny_model):
    """More latent frames than one refinement window: windows overlap and every frame comes out."""
    assert tiny_model.refiner.max_latent_frames == 4
    video = random_video(33, 32, 32, seed=6)  # 9 latent frames: three windows
    data = encode_video(tiny_model, video, quality=2).data
    out = decode_video(tiny_model, data)
    assert out.frames.shape == video.frames.shape
    assert not np.array_equal(out.frames, decode_video(tiny_model, data, steps=0).frames)


def test_bad_ranges_and_options(tiny_model):
    data = encode_video(tiny_model, random_video(5, 32, 32), quality=0).data
    with pytest.raises(InputError, match="past the end"):
        decode_video(tiny_model, data, start=5)
    with pytest.raises(InputError, match="t_N"):
        encode_video(tiny_model, random_video(1, 32, 32), quality=0, t_n=1.0)
    with pytest.raises(InputError, match="0..255"):
        encode_video(tiny_model, random_video(1, 32, 32), quality=0, steps=300)
    with pytest.raises(InputError, match="intra-period"):
        encode_video(tiny_model, random_video(1, 32, 32), quality=0, intra_period=0)
    with pytest.raises(InputError, match="quality"):
        encode_video(tiny_model, random_video(1, 32, 32), quality=99)


def test_decode_twice_is_identical(tiny_model):
    video = random_video(5, 48, 64)
    data = encode_video(tiny_model, video, quality=2).data
    assert np.array_equal(decode_video(tiny_model, data).frames, decode_video(tiny_model, data).frames)


def test_other_weights_are_refused(tiny_model):
    data = encode_video(tiny_model, random_video(1, 32, 32), quality=0).data
    other = GnvcModel.from_profile("tiny", seed=1)
    with pytest.raises(BitstreamError, match="weights"):
        decode_video(other, data)


def test_saved_model_decodes_identically_without_rebuilding_tables(tiny_model, tiny_model_dir):
    video = random_video(5, 48, 64, seed=3)
    data = encode_video(tiny_model, video, quality=4).data
    loaded = GnvcModel.from_pretrained(tiny_model_dir)
    assert loaded.weights_hash == tiny_model.weights_hash
    out: list[np.ndarray] = []
    a = decode_stream(loaded, io.BytesIO(data), out.append, steps=0)
    b = decode_stream(tiny_model, io.BytesIO(data), lambda f: None)
    assert a.latents_sha256 == b.latents_sha256  # symbols and decoded latents: bit-exact
    assert np.array_equal(np.stack(out), decode_video(tiny_model, data, steps=0).frames)
    # The refiner is float arithmetic: a reloaded DiT may differ by float noise (a level at most).
    diff = decode_video(loaded, data).frames.astype(int) - decode_video(tiny_model, data).frames.astype(int)
    assert np.abs(diff).max() <= 1
