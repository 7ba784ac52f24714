"""Clip and latent shards: round trips, hashes, streaming shuffled batches, corruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvc.data.shards import (
    ClipRecord,
    LatentRecord,
    ShardError,
    iter_clip_batches,
    iter_latent_batches,
    iter_paired_batches,
    latent_normalisation,
    read_clip_shard,
    read_latent_shard,
    read_manifest,
    verify_shards,
    write_clip_shard,
    write_latent_shard,
)
from gnvc.errors import GnvcError, InputError


def _clip(i: int, shape=(5, 16, 16, 3)) -> ClipRecord:
    rng = np.random.default_rng(i)
    return ClipRecord(f"c{i}", "train", "test", rng.integers(0, 256, shape, dtype=np.uint8))


def test_clip_shard_round_trip(tmp_path: Path) -> None:
    records = [_clip(i) for i in range(5)]
    entry = write_clip_shard(tmp_path / "s.parquet", records, row_group_size=2)
    assert entry["clips"] == 5 and entry["bytes"] == (tmp_path / "s.parquet").stat().st_size
    back = list(read_clip_shard(tmp_path / "s.parquet"))
    assert [r.clip_id for r in back] == [r.clip_id for r in records]
    for a, b in zip(records, back, strict=True):
        assert np.array_equal(a.frames, b.frames) and a.sha256 == b.sha256


def test_latent_shard_round_trip_keeps_dtype_and_normalisation(tmp_path: Path) -> None:
    lat = np.random.default_rng(0).standard_normal((16, 2, 4, 4)).astype(np.float16)
    rec = LatentRecord("c0", "val", "ab" * 32, lat)
    norm = {"normalised": True, "latents_mean": [0.5] * 16, "latents_std": [2.0] * 16}
    write_latent_shard(tmp_path / "l.parquet", [rec], norm)
    (back,) = read_latent_shard(tmp_path / "l.parquet")
    assert back.latents.dtype == np.float16 and np.array_equal(back.latents, lat)
    assert back.clip_sha256 == "ab" * 32 and back.split == "val"
    assert latent_normalisation(tmp_path / "l.parquet") == norm


def test_flipped_byte_is_caught(tmp_path: Path) -> None:
    write_clip_shard(tmp_path / "s.parquet", [_clip(0)])
    with pytest.raises(ShardError):
        # Overwrite a stretch in the middle of the payload: either Parquet or the row hash notices.
        data = bytearray((tmp_path / "s.parquet").read_bytes())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(64)
        (tmp_path / "s.parquet").write_bytes(bytes(data))
        list(read_clip_shard(tmp_path / "s.parquet"))


def test_not_a_shard(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ShardError, match="not a readable Parquet shard"):
        list(read_clip_shard(tmp_path / "x.parquet"))
    with pytest.raises(ShardError, match="missing"):
        list(read_clip_shard(tmp_path / "absent.parquet"))
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(tmp_path)
    assert issubclass(ShardError, GnvcError)


def test_manifest_hashes_match_files(mini_clips: Path) -> None:
    man = read_manifest(mini_clips)
    verify_shards(man)
    assert man.data["splits"]["train"]["clips"] == 7 and man.data["splits"]["val"]["clips"] == 2
    assert len(man.shards) == 4  # 3 + 3 + 1 train, 2 val
    assert all(c["sha256"] for c in man.clips())


def test_verify_detects_a_replaced_shard(mini_clips: Path, tmp_path: Path) -> None:
    copy = tmp_path / "clips"
    shutil.copytree(mini_clips.parent, copy)
    man = read_manifest(copy / "manifest.json")
    first = copy / man.shards[0]["path"]
    write_clip_shard(first, [_clip(0, (5, 32, 32, 3))])
    with pytest.raises(ShardError, match="does not match"):
        verify_shards(read_manifest(copy / "manifest.json"))


def test_clip_batches_deterministic_shuffled_and_complete(mini_clips: Path) -> None:
    def epoch(seed: int) -> list[torch.Tensor]:
        return list(iter_clip_batches(mini_clips, 3, seed, repeat=False, shuffle_buffer=4))

    a, b, c = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert [x.shape[0] for x in a] == [3, 3, 1]
    x = a[0]
    assert x.shape == (3, 3, 5, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # One epoch holds each training clip exactly once, in an order the seed changes.
    flat_a = torch.cat(a).flatten(1)
    flat_c = torch.cat(c).flatten(1)
    key = lambda t: sorted(map(tuple, t[:, :64].tolist()))  # noqa: E731
    assert key(flat_a) == key(flat_c)
    assert not torch.equal(flat_a, flat_c)
    plain = torch.cat(list(iter_clip_batches(mini_clips, 7, 0, shuffle=False, repeat=False)))
    assert key(plain.flatten(1)) == key(flat_a)


def test_clip_batches_repeat_crop_frames_and_ranks(mini_clips: Path) -> None:
    it = iter_clip_batches(mini_clips, 4, 0, crop=16, frames=3)
    batches = [next(it) for _ in range(5)]  # 20 clips > 7: crosses epochs
    assert all(b.shape == (4, 3, 3, 16, 16) for b in batches)
    r0 = torch.cat(list(iter_clip_batches(mini_clips, 2, 5, repeat=False, rank=0, world_size=2)))
    r1 = torch.cat(list(iter_clip_batches(mini_clips, 2, 5, repeat=False, rank=1, world_size=2)))
    assert r0.shape[0] + r1.shape[0] == 7 and abs(r0.shape[0] - r1.shape[0]) <= 1
    both = sorted(map(tuple, torch.cat([r0, r1]).flatten(1)[:, :64].tolist()))
    one = torch.cat(list(iter_clip_batches(mini_clips, 7, 5, repeat=False)))
    alone = sorted(map(tuple, one.flatten(1)[:, :64].tolist()))
    assert both == alone
    val = list(iter_clip_batches(mini_clips, 2, 0, split="val", repeat=False))
    assert val[0].shape[-2:] == (48, 48)
    with pytest.raises(InputError, match="crop"):
        next(iter_clip_batches(mini_clips, 2, 0, crop=64))
    with pytest.raises(InputError, match="different shapes"):
        list(iter_clip_batches(mini_clips, 9, 0, split=None, repeat=False, shuffle=False))
    with pytest.raises(ShardError, match="no shards for split"):
        next(iter_clip_batches(mini_clips, 2, 0, split="test"))


def test_latent_and_paired_batches(mini_latents: Path, mini_clips: Path) -> None:
    lat = list(iter_latent_batches(mini_latents, 4, 0, repeat=False))
    assert [b.shape for b in lat] == [(4, 16, 2, 4, 4), (3, 16, 2, 4, 4)]
    again = list(iter_latent_batches(mini_latents, 4, 0, repeat=False))
    assert all(torch.equal(x, y) for x, y in zip(lat, again, strict=True))
    pairs = list(iter_paired_batches(mini_latents, 4, 0, repeat=False))
    assert [p.shape for p, _ in pairs] == [(4, 3, 5, 32, 32), (3, 3, 5, 32, 32)]
    assert all(torch.equal(a, b) for (_, a), b in zip(pairs, lat, strict=True))
    manifest = json.loads(mini_latents.read_text())
    assert manifest["clips_manifest"]["dataset_sha256"] == json.loads(mini_clips.read_text())["dataset_sha256"]
