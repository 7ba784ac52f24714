"""A training killed with SIGKILL resumes to bit-identical weights, and logs every step once.

Real processes, real signals: ``gnvc stage prior`` (the DiT prior stage on a tiny profile) runs
in a subprocess, pauses at a fault point (``gnvc.faults``: right after checkpoint k is renamed
into place, with the export's temporary written, or between the export's two renames), and this
test kills it there with ``SIGKILL``. The same command is then run again, to the end, and its
weights hash is compared with an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gnvc.faults import ENV_DIR, ENV_POINT, hits, wait_paused

from .conftest import TEST_PROFILE, synthetic_training_data

REPO = Path(__file__).resolve().parents[2]
STEPS = 12
EVERY = 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips, an (untrained) model directory standing for the vae stage's, its latents, params.yaml."""
    import torch

    from gnvc.data.latents import encode_latents
    from gnvc.models.model_dir import GnvcModel

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("killresume")
    profile, _ = synthetic_training_data(tmp, clips=4, clips_per_shard=2)
    GnvcModel.from_profile(TEST_PROFILE, seed=0).save_pretrained(tmp / "vae")
    encode_latents(
        {"clips_manifest": str(tmp / "clips/manifest.json"), "vae": str(tmp / "vae"),
         "out_dir": str(tmp / "latents"), "batch_size": 2, "threads": 1},
        profile="tiny", progress=False,
    )  # fmt: skip
    params = {
        "profile": str(profile),
        "seed": 0,
        "prior": {
            "input": str(tmp / "vae"), "latents_manifest": str(tmp / "latents/manifest.json"),
            "steps": STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 2, "log_every": 1,
            "batch_size": 2, "t_min": 0.4, "lr": 2e-3, "progress": False, "device": "cpu",
        },
    }  # fmt: skip
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def _command(setup: Path) -> list[str]:
    """The same command line for every run; each runs in its own folder (relative paths, as in
    params.yaml: the config fingerprint, which includes the output path, is the same everywhere)."""
    cmd = [sys.executable, "-m", "gnvc", "stage", "prior", "--params", str(setup / "params.yaml")]
    cmd += ["--metrics-dir", "metrics"]
    for k, v in {"run_dir": "runs", "log_dir": "log", "output": "out", "export_dir": "export"}.items():
        cmd += ["--set", f"prior.{k}={v}"]
    return cmd


def _env(fault: str | None = None, fault_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNVC_FAULT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GNVC_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if fault:
        env[ENV_POINT], env[ENV_DIR] = fault, str(fault_dir)
    return env


def _finish(setup: Path, run: Path) -> dict[str, Any]:
    """Run the stage to its end; its metrics (weights hash, steps, resumed_from)."""
    proc = subprocess.run(_command(setup), env=_env(), cwd=run, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run / "metrics" / "prior.json").read_text())


def _kill_at(setup: Path, run: Path, fault: str) -> int:
    """Start the stage, SIGKILL it when it pauses at ``fault``; returns the killed pid."""
    fault_dir = run / f"fault-{fault.replace(':', '-')}"
    log = (run / f"{fault_dir.name}.log").open("w")
    proc = subprocess.Popen(_command(setup), env=_env(fault, fault_dir), cwd=run, stdout=log, stderr=log)
    try:
        try:
            pid = wait_paused(fault_dir, 240, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{e}\n{(run / f'{fault_dir.name}.log').read_text()[-3000:]}") from None
        assert pid == proc.pid  # the training process itself, not a helper
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert [h[2] for h in hits(fault_dir)] == [pid]
    return pid


def _steps_logged(run: Path) -> list[int]:
    lines = (run / "log" / "metrics.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("step")
    return [int(line.split("\t")[col]) for line in lines[1:]]


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "runs").glob("step-*"))


def _export_step(path: Path) -> int:
    return int(json.loads((path / "trainer.json").read_text())["step"])


def test_sigkilled_training_resumes_bit_identical(setup: Path, tmp_path: Path) -> None:
    """Killed three times — between export 4's two renames, with export 8 written but not swapped in,
    and right after checkpoint 10 — then finished: the same weights as a run never interrupted."""
    ref = tmp_path / "straight"
    ref.mkdir()
    straight = _finish(setup, ref)
    assert straight["steps"] == STEPS and straight["resumed_from"] == 0
    assert _steps_logged(ref) == list(range(1, STEPS + 1))

    run = tmp_path / "killed"
    run.mkdir()
    pids = [_kill_at(setup, run, "export-swapped:4")]
    # The state the old code lost the export in: the previous one moved aside, the new one not in place.
    assert not (run / "export").exists() and _export_step(run / ".export.old") == 2
    assert _checkpoints(run) == ["step-0000002", "step-0000004"]
    assert _steps_logged(run) == [1, 2, 3, 4]
    fresh = tmp_path / "fresh-machine"
    fresh.mkdir()
    shutil.copytree(run / ".export.old", fresh / ".export.old")  # all a machine with the export folder has

    pids.append(_kill_at(setup, run, "export-written:8"))
    assert _export_step(run / "export") == 6  # export 2 recovered at start, 6 published, 8 not yet
    assert _checkpoints(run) == ["step-0000006", "step-0000008"]
    assert _steps_logged(run) == list(range(1, 9))

    pids.append(_kill_at(setup, run, "checkpoint-saved:10"))
    assert _checkpoints(run) == ["step-0000006", "step-0000008", "step-0000010"]  # killed before pruning
    assert _steps_logged(run) == list(range(1, 11))

    resumed = _finish(setup, run)
    assert len(set(pids)) == 3
    assert resumed["resumed_from"] == 10 and resumed["steps"] == STEPS
    assert resumed["weights_hash"] == straight["weights_hash"]
    assert _steps_logged(run) == list(range(1, STEPS + 1))  # every step once: no row lost or repeated
    assert _export_step(run / "export") == STEPS and not (run / ".export.old").exists()
    assert json.loads((run / "log" / "summary.json").read_text())["step"] == STEPS

    # A machine with only the export (empty run_dir): the export is recovered from .export.old, not lost.
    again = _finish(setup, fresh)
    assert again["resumed_from"] == 2 and again["steps"] == STEPS
    assert _export_step(fresh / "export") == STEPS
