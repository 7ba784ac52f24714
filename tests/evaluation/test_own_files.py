"""gnvc writes only its outputs and its own cache; ``gnvc cache`` shows, cleans, and removes 0.1's leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gnvc.cli import cli
from gnvc.io.video import Video, write_video
from gnvc.metrics.weights import HUB_FILENAMES, SEEDED_SUFFIX

REPO = Path(__file__).resolve().parents[2]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def test_metrics_write_nothing_outside_gnvc_cache(tmp_path):
    """A first LPIPS/DISTS run in a fresh HOME leaves files only under $XDG_CACHE_HOME/gnvc."""
    videos, home = tmp_path / "videos", tmp_path / "home"
    videos.mkdir()
    home.mkdir()
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    dist = np.clip(ref.astype(np.int16) + rng.integers(-12, 13, ref.shape), 0, 255).astype(np.uint8)
    write_video(videos / "a.y4m", Video(ref))
    write_video(videos / "b.y4m", Video(dist))

    env = {k: v for k, v in os.environ.items() if k != "GNVC_CACHE"}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        TORCH_HOME=str(home / ".cache" / "torch"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    out = videos / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gnvc", "metrics", str(videos / "a.y4m"), str(videos / "b.y4m")]
        + ["--metrics", "psnr_rgb,lpips_alex,dists", "--json", str(out)],
        env=env,
        cwd=videos,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    means = json.loads(out.read_text())["mean"]
    assert means["lpips_alex"] > 0 and means["dists"] > 0  # the perceptual metrics really ran

    own = home / ".cache" / "gnvc"
    written = _files(home)
    outside = [p for p in written if own not in p.parents]
    assert outside == [], f"gnvc wrote outside {own}: {outside}"
    assert not [p for p in written if "torch/hub" in p.relative_to(home).as_posix()]
    assert not (home / ".cache" / "torch").exists()
    # Non-vacuous: the converted backbones were built, in gnvc's own cache, and handed to
    # torchvision in memory (no hub-style checkpoint copies anywhere).
    assert sorted(p.name.split("_")[0] for p in (own / "perceptual").glob("*.safetensors")) == ["alexnet", "vgg16"]
    assert not (own / "torch_hub").exists()


@pytest.fixture
def fake_torch_home(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME at a temporary directory, with torch hub following it; returns its checkpoints/."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    assert Path(torch.hub.get_dir()) == checkpoints.parent
    return checkpoints


def test_cache_clean_legacy_removes_only_marked_checkpoints(fake_torch_home):
    ckpt = fake_torch_home
    seeded = ckpt / HUB_FILENAMES["alexnet"]
    seeded.write_bytes(b"gnvc 0.1 checkpoint")
    (ckpt / (seeded.name + SEEDED_SUFFIX)).write_text("Written by gnvc\n")
    real = ckpt / HUB_FILENAMES["vgg16"]  # same kind of name, but no marker: a real download
    real.write_bytes(b"real vgg16")
    other = ckpt / "other.pth"
    other.write_bytes(b"someone else's")
    orphan = ckpt / ("gone.pth" + SEEDED_SUFFIX)  # gnvc's marker whose checkpoint was deleted by hand
    orphan.write_text("Written by gnvc\n")

    r = CliRunner().invoke(cli, ["cache", "clean", "--legacy"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([real.name, other.name])
    assert real.read_bytes() == b"real vgg16" and other.read_bytes() == b"someone else's"
    assert str(seeded) in r.output and str(orphan) in r.output

    r = CliRunner().invoke(cli, ["cache", "clean", "--legacy"])
    assert r.exit_code == 0 and "nothing to remove" in r.output
    assert len(list(ckpt.iterdir())) == 2


def test_cache_dir_and_clean(tmp_path, monkeypatch):
    own = tmp_path / "own-cache"
    monkeypatch.setenv("GNVC_CACHE", str(own))
    r = CliRunner().invoke(cli, ["cache", "dir"])
    assert r.exit_code == 0 and r.output.strip() == str(own)

    r = CliRunner().invoke(cli, ["cache", "clean"])
    assert r.exit_code == 0 and "nothing to remove" in r.output

    (own / "perceptual").mkdir(parents=True)
    (own / "perceptual" / "x.safetensors").write_bytes(b"0" * 2048)
    r = CliRunner().invoke(cli, ["cache", "clean"])
    assert r.exit_code == 0, r.output
    assert str(own) in r.output and "1 files, 2.0 KiB" in r.output
    assert not own.exists() and tmp_path.is_dir()


def test_cache_clean_refuses_home(tmp_path, monkeypatch):
    """A GNVC_CACHE pointing at HOME (or above it) is an error, not an rm -rf of the home directory."""
    from gnvc.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    for target in (home, tmp_path):
        monkeypatch.setenv("GNVC_CACHE", str(target))
        with pytest.raises(SystemExit) as e:
            main(["cache", "clean"])
        assert e.value.code == 2
    assert (home / "precious.txt").read_text() == "keep"
