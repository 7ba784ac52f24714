"""Refinement inside the codec: reproducible decodes, the header seed, --steps 0, the weights hash."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvc.codec.container import read_stream
from gnvc.io.video import Video
from gnvc.models.model_dir import GnvcModel
from gnvc.videocodec import decode_video, encode_video


def _video(frames: int = 9, size: int = 32) -> Video:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1)
    clip = np.stack([np.roll(base, 2 * t, axis=1) for t in range(frames)]).astype(np.uint8)
    return Video(clip, Fraction(25))


@pytest.fixture(scope="module")
def model() -> GnvcModel:
    torch.set_num_threads(1)
    m = GnvcModel.from_profile("tiny", seed=0)
    assert m.refiner is not None and m.refiner.adapter is not None
    # A trained adapter is non-zero; make this one so, so the context matters too.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.refiner.adapter.block_proj.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    m.invalidate_hash()
    return m


def test_decode_twice_gives_identical_frames(model: GnvcModel) -> None:
    data = encode_video(model, _video(), 2, seed=7).data
    header = read_stream(data)[0]
    assert header.steps == 5 and header.t_n == pytest.approx(0.7)
    a, b = decode_video(model, data).frames, decode_video(model, data).frames
    assert np.array_equal(a, b)


def test_header_seed_changes_the_refinement(model: GnvcModel) -> None:
    video = _video()
    one, two = encode_video(model, video, 2, seed=1), encode_video(model, video, 2, seed=2)
    # Same latent payload: only the header's seed differs.
    assert [r.streams for r in read_stream(one.data)[1]] == [r.streams for r in read_stream(two.data)[1]]
    a, b = decode_video(model, one.data).frames, decode_video(model, two.data).frames
    assert not np.array_equal(a, b)
    # Without refinement the seed plays no role.
    assert np.array_equal(decode_video(model, one.data, steps=0).frames, decode_video(model, two.data, steps=0).frames)


def test_steps_zero_decodes_the_codec_latents(model: GnvcModel) -> None:
    video = _video()
    enc = encode_video(model, video, 3, seed=0, keep_latents=True)
    plain = decode_video(model, enc.data, steps=0).frames
    with torch.no_grad():
        expected = model.vae.decode(torch.stack(enc.latents, 2))
    expected = ((expected[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert np.array_equal(plain, expected[: video.num_frames])
    assert not np.array_equal(plain, decode_video(model, enc.data).frames)
    assert not np.array_equal(decode_video(model, enc.data, steps=2).frames, decode_video(model, enc.data).frames)


def test_model_dir_holds_the_refiner_and_the_hash_covers_it(model: GnvcModel, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "refiner" / "transformer" / "config.json").is_file()
    assert (tmp_path / "m" / "refiner" / "refiner.safetensors").is_file()
    loaded = GnvcModel.from_pretrained(tmp_path / "m")
    assert loaded.weights_hash == model.weights_hash
    data = encode_video(model, _video(), 1, seed=4).data
    assert np.array_equal(decode_video(loaded, data, steps=0).frames, decode_video(model, data, steps=0).frames)
    # The refiner is float arithmetic: two instances of the same weights may differ by ~1e-7
    # (MKL/oneDNN pick kernels by memory alignment), which can move a rounded pixel by one level.
    diff = decode_video(loaded, data).frames.astype(int) - decode_video(model, data).frames.astype(int)
    assert np.abs(diff).max() <= 1
    # Any change to the refiner (here one adapter weight) changes the hash the bitstream carries.
    with torch.no_grad():
        loaded.refiner.adapter.block_proj[0].bias[0] += 1e-3
    loaded.invalidate_hash()
    assert loaded.weights_hash != model.weights_hash
