"""A disk that fills up while gnvc writes: one clear error line, a non-zero exit, nothing half-written.

Two ways to run out of space, both real: ``RLIMIT_FSIZE`` in the child process (every write past
the limit fails with EFBIG — possible everywhere), and a small tmpfs that is already full, mounted
in a private mount namespace (ENOSPC from the kernel, as on a full disk; needs root). Each writer
gnvc has is covered: ``gnvc encode`` (the ``.gnvc``), ``gnvc decode`` (a video), ``gnvc data
prepare`` (clip shards) and ``gnvc data latents`` (latent shards). After the failure the output
is absent, or its previous version is byte-identical, and no temporary is left in the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ERROR = "no space left on the device"
PROGRESS = re.compile(r"[\w ]*:\s*\d+%\|[^|\r\n]*\|[^\]\r\n]*\]")  # a tqdm bar (some commands draw them)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model directory, a 5-frame 32x32 video, its .gnvc, a small clip data set and its
    latents: the outputs of the commands below, made in this process to learn their sizes."""
    import torch

    from gnvc.data.latents import encode_latents
    from gnvc.data.prepare import prepare_dataset
    from gnvc.io.video import Video, write_video
    from gnvc.models.model_dir import GnvcModel
    from gnvc.videocodec import encode_video

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("diskfull")
    model = GnvcModel.from_profile("tiny", seed=0)
    model.save_pretrained(tmp / "model")
    video = Video(np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8), Fraction(25))
    write_video(tmp / "in.y4m", video)
    (tmp / "in.gnvc").write_bytes(encode_video(model, video, 1, seed=0).data)
    prepare_dataset(
        {"out_dir": str(tmp / "clips"), "sources": ["synthetic"], "frames": 5, "clips_per_shard": 2,
         "train": {"size": [32, 32], "synthetic_clips": 2}, "val": {"size": [32, 32], "synthetic_clips": 1}},
        progress=False,
    )  # fmt: skip
    encode_latents(
        {"clips_manifest": str(tmp / "clips/manifest.json"), "vae": str(tmp / "model"),
         "out_dir": str(tmp / "latents"), "batch_size": 2},
        progress=False,
    )  # fmt: skip
    return tmp


def _largest_output(work: Path, writer: str) -> int:
    """The size of the largest file the writer writes (known from the fixture's own outputs)."""
    if writer == "encode":
        return (work / "in.gnvc").stat().st_size  # the same video, model and quality
    if writer == "decode":
        return (work / "in.y4m").stat().st_size  # the same geometry, frame count and format
    folder = work / ("clips" if writer == "prepare" else "latents")
    return max(p.stat().st_size for p in folder.glob("*.parquet"))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _gnvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "gnvc", *args]


def _commands(work: Path, out: Path) -> dict[str, list[str]]:
    """Each writer, writing into the folder ``out``."""
    model = str(work / "model")
    return {
        "encode": _gnvc("encode", str(work / "in.y4m"), "-o", str(out / "out.gnvc"), "--weights", model,
                        "--quality", "1"),
        "decode": _gnvc("decode", str(work / "in.gnvc"), "-o", str(out / "out.y4m"), "--weights", model),
        "prepare": _gnvc("data", "prepare", "-o", str(out / "clips"), "--source", "synthetic", "--frames", "5",
                         "--set", "data.train.synthetic_clips=2", "--set", "data.val.synthetic_clips=1",
                         "--set", "data.train.size=[32,32]", "--set", "data.val.size=[32,32]"),
        "latents": _gnvc("data", "latents", "--clips", str(work / "clips" / "manifest.json"), "--vae", model,
                         "-o", str(out / "latents"), "--batch-size", "2"),
    }  # fmt: skip


def _listing(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def _assert_one_clear_line(rc: int, stderr: str) -> None:
    """A non-zero exit and one ``error: … no space left on the device`` line (progress bars aside)."""
    assert rc not in (0, -signal.SIGXFSZ), stderr[-3000:]  # killed by SIGXFSZ instead of getting EFBIG
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [x.strip() for x in re.split(r"[\r\n]+", PROGRESS.sub("", stderr)) if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and ERROR in lines[0], stderr[-3000:]


def _limit_file_size(limit: int) -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the process.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("writer", ["encode", "decode", "prepare", "latents"])
def test_file_size_limit(work: Path, tmp_path: Path, writer: str) -> None:
    """Every write past half of the output's real size fails with EFBIG (RLIMIT_FSIZE)."""
    limit = _largest_output(work, writer) // 2
    assert limit > 0
    out = tmp_path / "out"
    out.mkdir()
    if writer == "encode":
        (out / "out.gnvc").write_bytes(b"an older out.gnvc")  # a previous version the failure must keep
    before = _listing(out)
    proc = subprocess.run(
        _commands(work, out)[writer], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: _limit_file_size(limit),  # noqa: PLW1509 - setrlimit only, before exec
    )  # fmt: skip
    _assert_one_clear_line(proc.returncode, proc.stderr)
    assert "file size limit" in proc.stderr
    assert _listing(out) == before  # output absent or the previous version intact; no temporaries


def _fullfs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.io.fullfs", "--mount", str(tmp_path / "full"), *args]
    return subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("writer", ["encode", "prepare"])
def test_full_tmpfs(work: Path, tmp_path: Path, writer: str) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("a private tmpfs needs Linux mount namespaces")
    probe = _fullfs(tmp_path, "--probe")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace with a tmpfs here: {probe.stdout.strip()}")
    previous = tmp_path / "out.gnvc"
    previous.write_bytes((work / "in.gnvc").read_bytes())  # a real, older .gnvc the failed encode must keep
    copy = ["--copy", str(previous)] if writer == "encode" else []
    proc = _fullfs(tmp_path, *copy, "--", *_commands(work, tmp_path / "full")[writer])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    _assert_one_clear_line(result["rc"], result["stderr"])
    assert "disk full" in result["stderr"]
    assert result["filler"] > 0
    assert result["after"] == result["before"]
    if writer == "encode":
        assert result["after"] == {"out.gnvc": hashlib.sha256(previous.read_bytes()).hexdigest()}
    else:
        assert result["after"] == {}
