"""``dvc repro`` of the real dvc.yaml on a miniature params set: prepare → vae → latents, then a
second run is a no-op, a changed knob re-runs only its stage, and a DVC S3 remote (SeaweedFS)
pushes and pulls the outputs."""

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


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `gnvc` command
    env["DVC_NO_ANALYTICS"] = "1"
    env["GNVC_NUM_THREADS"] = "2"
    return env


def dvc(repo: Path, *args: str, stdout_only: bool = False) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture()
def mini_repo(tmp_path: Path) -> Path:
    """A copy of the pipeline's files (dvc.yaml, the gnvc sources its stages depend on) in a fresh
    git + DVC repository, with the miniature params."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "gnvc", repo / "gnvc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (repo / "params.yaml").write_text(yaml.safe_dump(MINI_PARAMS, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    return repo


def test_dvc_repro_second_run_is_a_noop_and_changes_rerun_only_their_stage(mini_repo: Path, seaweed) -> None:
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

    # The DVC S3 remote, configured as infra/README.md says, against a real S3 server.
    from gnvc.storage.s3 import S3Store

    S3Store("s3://gnvc-dvc", endpoint_url=seaweed.endpoint_url, create_bucket=True)
    dvc(mini_repo, "remote", "add", "-d", "storage", "s3://gnvc-dvc/cache")
    dvc(mini_repo, "remote", "modify", "storage", "endpointurl", seaweed.endpoint_url)
    dvc(mini_repo, "push")
    clone = mini_repo.parent / "clone"
    clone.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):
        shutil.copy(mini_repo / name, clone / name)
    shutil.copytree(mini_repo / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    dvc(clone, "pull", "--with-deps", "latents")
    for rel in ("data/clips/manifest.json", "data/latents/manifest.json", "build/tiny/vae/model_index.json"):
        assert (clone / rel).read_bytes() == (mini_repo / rel).read_bytes(), rel
