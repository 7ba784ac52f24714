"""``dvc repro`` of the real dvc.yaml on a miniature params set: prepare → vae → latents, then a
second run is a no-op and a changed knob re-runs only its stage. Every output of dvc.yaml is
cached (so on the remote). And the documented way to reproduce a run elsewhere (infra/README.md),
on a two-stage project (dvc.yaml's ``prepare`` + ``gnvc model init``) with a DVC S3 remote on a real
SeaweedFS: ``git clone`` + ``dvc pull`` → ``dvc status`` clean → ``gnvc decode`` with the pulled
model gives the original side's frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import MINI_DATA, REPO

MINI_PARAMS = {
    "profile": "tiny",
    "seed": 0,
    "data": {**MINI_DATA, "out_dir": "data/clips"},
    "vae": {"steps": 2, "batch_size": 2, "frames": 5, "crop": [32, 32], "lpips_weight": 0.0,
            "stats_batches": 1, "log_every": 1, "progress": False},
    "latents": {"vae": "build/{profile}/vae", "clips_manifest": "data/clips/manifest.json",
                "out_dir": "data/latents", "batch_size": 4},
}  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ) | extra
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `gnvc` command
    env["DVC_NO_ANALYTICS"] = "1"
    env["GNVC_NUM_THREADS"] = "2"
    for who in ("AUTHOR", "COMMITTER"):  # commits in the test's own repositories
        env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = "gnvc test", "test@gnvc.invalid"
    return env


def dvc(repo: Path, *args: str, stdout_only: bool = False) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def make_repo(repo: Path, params: dict, stages: dict | None = None) -> Path:
    """A copy of the pipeline's files (dvc.yaml, the gnvc sources its stages depend on, the DVC
    remote script) in a fresh git + DVC repository, with ``params`` (and ``stages``, if given,
    as its dvc.yaml)."""
    (repo / "infra/s3").mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "infra/s3/dvc_remote.sh"):
        shutil.copy(REPO / name, repo / name)
    if stages is not None:
        (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    shutil.copytree(REPO / "gnvc", repo / "gnvc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    return repo


@pytest.fixture()
def mini_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", MINI_PARAMS)


def test_dvc_repro_second_run_is_a_noop_and_changes_rerun_only_their_stage(mini_repo: Path) -> None:
    out = dvc(mini_repo, "repro", "latents")
    assert _ran(out) == {"prepare", "vae", "latents"}
    assert (mini_repo / "build/tiny/vae/model_index.json").is_file()
    assert (mini_repo / "data/latents/manifest.json").is_file()

    out = dvc(mini_repo, "repro", "latents")
    assert _ran(out) == set() and "Data and pipelines are up to date" in out

    params = yaml.safe_load((mini_repo / "params.yaml").read_text())
    params["latents"]["batch_size"] = 2
    (mini_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(dvc(mini_repo, "repro", "latents")) == {"latents"}

    metrics = json.loads(dvc(mini_repo, "metrics", "show", "--json", stdout_only=True))
    stage_metrics = next(iter(metrics.values()))["data"]["reports/stages/prepare.json"]["data"]
    assert stage_metrics["clips_train"] == 7 and stage_metrics["wall_s"] > 0
    dvc(mini_repo, "plots", "show", "-o", str(mini_repo / "plots"))
    assert (mini_repo / "plots/index.html").is_file()


def test_every_pipeline_output_goes_to_the_dvc_cache() -> None:
    """An output kept out of the cache (``cache: false``) is git-ignored here, so it is on no remote:
    a clone would never be up to date after ``dvc pull``. Every output must be cached."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    checked = 0
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                assert opts.get("cache", True), f"dvc.yaml {name}.{kind}: {path} has cache: false"
                checked += 1
    assert checked >= 14  # every stage's output and its metrics file


def run(cwd: Path, *cmd: str, **env: str) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_clone_and_dvc_pull_elsewhere_decodes_like_the_original(tmp_path: Path, seaweed) -> None:
    """The documented way to reproduce a run elsewhere, end to end against a real S3 server.

    The whole tiny pipeline takes many minutes on a 2-core CPU, so this project has two stages:
    dvc.yaml's own ``prepare`` (verbatim) and a ``model`` stage that writes a real (untrained)
    model directory with ``gnvc model init``, the ``models/<profile>`` that ``gnvc decode`` reads.
    """
    from fractions import Fraction

    import numpy as np

    from gnvc.io.video import Video, read_y4m, write_y4m

    stages = {
        "prepare": yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["prepare"],
        "model": {
            "cmd": "gnvc model init --profile ${profile} --seed ${seed} -o models/${profile}",
            "deps": ["gnvc/models", "gnvc/profiles/${profile}.yaml"],
            "params": ["profile", "seed"],
            "outs": ["models/${profile}"],
        },
    }
    origin = make_repo(tmp_path / "origin", MINI_PARAMS, stages)
    assert _ran(dvc(origin, "repro")) == {"prepare", "model"}
    gnvc = str(Path(sys.executable).parent / "gnvc")
    # The S3 remote as infra/README.md sets it up: the bucket, then infra/s3/dvc_remote.sh (URL in
    # .dvc/config, committed; endpoint in .dvc/config.local; keys only in the environment).
    remote = {"GNVC_DVC_REMOTE_URL": "s3://gnvc-dvc/dvc-cache"}
    run(origin, gnvc, "storage", "mb", "s3://gnvc-dvc")
    run(origin, "bash", "infra/s3/dvc_remote.sh", **remote)
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-q", "-m", "a run")
    dvc(origin, "push")

    # Another machine: git clone, the remote's endpoint, dvc pull. Nothing re-runs: status is clean.
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "models").exists() and not (clone / "reports").exists()
    run(clone, "bash", "infra/s3/dvc_remote.sh", **remote)
    dvc(clone, "pull")
    assert "Data and pipelines are up to date" in dvc(clone, "status")
    for rel in ("models/tiny/model_index.json", "reports/stages/prepare.json", "data/clips/manifest.json"):
        assert (clone / rel).read_bytes() == (origin / rel).read_bytes(), rel

    # A bitstream made on the original side decodes to the same frames with the pulled model.
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    write_y4m(tmp_path / "in.y4m", Video(frames, Fraction(25)))
    x, origin_out = str(tmp_path / "x.gnvc"), str(tmp_path / "origin.y4m")
    # `gnvc encode` then `gnvc decode`, in one process (one torch start-up less on a busy CPU).
    both = f"from gnvc.cli import main; main({['encode', str(tmp_path / 'in.y4m'), '-o', x, '-q', '1']!r}); "
    run(origin, sys.executable, "-c", both + f"main({['decode', x, '-o', origin_out]!r})")
    run(clone, gnvc, "decode", x, "-o", str(tmp_path / "clone.y4m"))
    a, b = read_y4m(tmp_path / "origin.y4m").frames, read_y4m(tmp_path / "clone.y4m").frames
    assert a.shape == (5, 32, 32, 3) and np.array_equal(a, b)
