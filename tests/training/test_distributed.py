"""Data-parallel training on Ray Train: N workers train as one process would, and survive a kill.

Real Ray (a local cluster of 2 CPU slots, gloo), real worker processes, a real ``SIGKILL``. The
tests marked ``ray`` run only in a loopback-only network namespace (Ray binds the machine's
address otherwise): ``tests/pipeline/test_ray_netns.py`` re-runs this file there. The others
(the split arithmetic, the refusals, ``--workers 1`` without Ray) run anywhere.

The model is the VAE stage on the tests' tiny profile: 2 workers × 2 clips per step against
1 process × 4 clips per step, same seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from flows.netns import only_loopback
from gnvc.training.distributed import WorkerGroup

from .conftest import synthetic_training_data

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
EVERY = 2
# Two workers sum the same per-row terms in a different order than one process (two half-batch
# means averaged vs one mean): float32 rounding, ~1e-7 relative per step, which Adam's normalised
# updates carry forward. Measured here over 6 steps: 1.7e-7 relative on the loss, 6.6e-6 absolute
# on the weights (docs/training.md); the bounds leave room for other CPUs' kernels and stay far
# below what other data or unsynced gradients make (different clips, different losses at 1e-2).
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4

ray_only = pytest.mark.skipif(
    not only_loopback(), reason="starts Ray: run in a loopback-only network namespace (test_ray_netns does)"
)


def _params(tmp: Path, profile: Path, clips: Path, tag: str, **over: Any) -> dict[str, Any]:
    section = {
        "steps": STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 2, "log_every": 1, "progress": False,
        "batch_size": 4, "image_steps": 2, "image_batch_size": 4, "frames": 5, "crop": [16, 16], "lr": 4e-4,
        "logvar_init": -6.0, "lpips_weight": 0.0, "stats_batches": 1, "device": "cpu", "clips_manifest": str(clips),
        "run_dir": str(tmp / tag / "runs"), "log_dir": str(tmp / tag / "log"), "output": str(tmp / tag / "out"),
    }  # fmt: skip
    section.update(over)
    return {"profile": str(profile), "seed": 0, "vae": section}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(tmp, profile file, clip manifest): 8 synthetic 32² training clips of 5 frames."""
    tmp = tmp_path_factory.mktemp("dist")
    profile, manifest = synthetic_training_data(tmp, clips=8, clips_per_shard=4)
    return tmp, profile, manifest


def _logged_steps(log: Path) -> list[int]:
    lines = (log / "metrics.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("step")
    return [int(line.split("\t")[col]) for line in lines[1:]]


def _losses(run_dir: Path) -> dict[int, float]:
    """Step → loss at full precision (the last checkpoint's history; metrics.tsv rounds to 6 digits)."""
    meta = json.loads((run_dir / f"step-{STEPS:07d}" / "trainer.json").read_text())
    return {int(h["step"]): float(h["loss"]) for h in meta["history"]}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted(model_dir.rglob("*.safetensors"))
    assert files, f"no weights under {model_dir}"
    return {f"{f.relative_to(model_dir)}:{k}": v for f in files for k, v in load_file(str(f)).items()}


# ---------------------------------------------------------------------------------- anywhere
def test_a_worker_takes_its_rows_of_the_global_batch_and_noise() -> None:
    """Two workers' rows of a stream item and of a noise draw are exactly one process's, split in two."""
    batch = torch.arange(24.0).reshape(4, 6)
    halves = [WorkerGroup(r, 2).shard(batch) for r in range(2)]
    assert torch.equal(torch.cat(halves), batch)
    one = torch.randn((4, 3, 5), generator=torch.Generator().manual_seed(7))
    parts = []
    for r in range(2):
        g = torch.Generator().manual_seed(7)
        parts.append(WorkerGroup(r, 2).draw(lambda s, g=g: torch.randn(s, generator=g), (2, 3, 5)))
    assert torch.equal(torch.cat(parts), one)
    with pytest.raises(Exception, match="cannot be split over 2 workers"):
        WorkerGroup(0, 2).shard(torch.zeros(3, 1))


def _gnvc(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "gnvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_an_unsplittable_batch_is_refused_before_ray_starts(data: tuple[Path, Path, Path]) -> None:
    tmp, profile, clips = data
    (tmp / "p3.yaml").write_text(yaml.safe_dump(_params(tmp, profile, clips, "refused")))
    proc = _gnvc(["stage", "vae", "--params", str(tmp / "p3.yaml"), "--workers", "3"], tmp)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "vae.batch_size=4 does not split over 3 workers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp / "refused").exists()


def test_one_worker_and_a_refusal_never_import_ray(data: tuple[Path, Path, Path]) -> None:
    """``--workers 1`` (the default) is today's single process, and an unsplittable batch is refused
    before Ray is imported: neither imports Ray."""
    tmp, profile, clips = data
    params = _params(tmp, profile, clips, "one", steps=2, checkpoint_every=0, image_steps=1)
    code = (
        "import sys, json; from gnvc.stages.runner import run_stage; from gnvc.errors import ConfigError\n"
        f"p = json.loads({json.dumps(json.dumps(params))})\n"
        "try:\n    run_stage('vae', p, metrics_dir=None, workers=3)\nexcept ConfigError as e:\n    refused = str(e)\n"
        "try:\n    run_stage('prepare', p, metrics_dir=None, workers=2)\nexcept ConfigError as e:\n    refused += str(e)\n"  # noqa: E501
        "m = run_stage('vae', p, metrics_dir=None, workers=1)\n"
        "print(json.dumps({'ray': 'ray' in sys.modules, 'steps': m['steps'], 'refused': refused}))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ray"] is False and out["steps"] == 2 and "does not split over 3 workers" in out["refused"]
    assert "--workers applies to the training stages" in out["refused"]
    assert json.loads((tmp / "one" / "log" / "summary.json").read_text())["workers"] == 1


# ---------------------------------------------------------------------------------- with Ray
@pytest.fixture(scope="module")
def two_workers(ray_cluster: None, data: tuple[Path, Path, Path]) -> dict[str, Any]:
    """The VAE stage with 2 workers (batch 4 = 2 × 2), uninterrupted."""
    from gnvc.stages.runner import run_stage

    tmp, profile, clips = data
    params = _params(tmp, profile, clips, "two")
    return run_stage("vae", params, metrics_dir=tmp / "two" / "metrics", workers=2, ray_storage=str(tmp / "ray2"))


@pytest.mark.ray
@ray_only
def test_two_workers_follow_one_process_loss_curve(data: tuple[Path, Path, Path], two_workers: dict[str, Any]) -> None:
    from gnvc.stages.runner import run_stage

    tmp, profile, clips = data
    one = run_stage("vae", _params(tmp, profile, clips, "single"), metrics_dir=None)
    assert one["steps"] == two_workers["steps"] == STEPS and two_workers["workers"] == 2
    a, b = _losses(tmp / "single" / "runs"), _losses(tmp / "two" / "runs")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    assert _logged_steps(tmp / "two" / "log") == list(range(1, STEPS + 1))
    rel = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    print(f"max relative loss difference over {STEPS} steps: {rel:.2e}")
    assert rel < LOSS_RTOL
    assert max(a.values()) - min(a.values()) > 1e-3  # a curve that moves, not two constant ones
    wa, wb = _weights(tmp / "single" / "out"), _weights(tmp / "two" / "out")
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel())
    print(f"max weight difference after {STEPS} steps: {diff:.2e}")
    assert diff < WEIGHT_ATOL
    summary = json.loads((tmp / "two" / "log" / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["step"] == STEPS
    stage_metrics = json.loads((tmp / "two" / "metrics" / "vae.json").read_text())
    assert stage_metrics["workers"] == 2 and stage_metrics["weights_hash"] == two_workers["weights_hash"]


def _train_workers() -> list[Any]:
    import psutil

    me = psutil.Process()
    found = []
    for p in me.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.ray
@ray_only
def test_a_killed_worker_resumes_from_the_last_checkpoint(
    data: tuple[Path, Path, Path], two_workers: dict[str, Any]
) -> None:
    """SIGKILL one worker after checkpoint 4: the group restarts, resumes, ends at the same weights."""
    from gnvc.stages.runner import run_stage

    tmp, profile, clips = data
    run = tmp / "killed"
    killed: dict[str, Any] = {}

    def kill_after_checkpoint() -> None:
        deadline = time.monotonic() + 1500  # Ray's start-up alone took minutes on a loaded 2-core machine
        while time.monotonic() < deadline and not (run / "runs" / f"step-{2 * EVERY:07d}").is_dir():
            time.sleep(0.02)
        workers = _train_workers()
        if workers:
            victim = workers[-1]
            killed["pid"] = victim.pid
            killed["step_seen"] = max(int(p.name[5:]) for p in (run / "runs").glob("step-*"))
            os.kill(victim.pid, signal.SIGKILL)
            known = {w.pid for w in workers}
            while time.monotonic() < deadline:
                new = [w.pid for w in _train_workers() if w.pid not in known]
                if new:
                    killed["new_pids"] = new
                    break
                time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_checkpoint, daemon=True)
    watcher.start()
    params = _params(tmp, profile, clips, "killed")
    result = run_stage("vae", params, metrics_dir=None, workers=2, ray_storage=str(tmp / "ray-k"), max_failures=1)
    watcher.join(120)
    assert killed.get("pid"), "the run ended before a worker could be killed"
    assert killed["step_seen"] < STEPS and killed["new_pids"], killed  # killed mid-run, a new group started
    assert result["steps"] == STEPS and result["workers"] == 2
    assert 2 * EVERY <= result["resumed_from"] < STEPS  # resumed from a checkpoint, not from scratch
    # Every step logged once; the final weights are those of the uninterrupted run (resume is exact).
    assert _logged_steps(run / "log") == list(range(1, STEPS + 1))
    assert result["weights_hash"] == two_workers["weights_hash"]
    # No lost checkpoint: run_dir ends with the last ones, Ray's storage holds complete copies of them.
    assert sorted(p.name for p in (run / "runs").glob("step-*"))[-1] == f"step-{STEPS:07d}"
    stored = [p for p in (tmp / "ray-k").glob("*/checkpoint_*") if (p / "trainer.json").is_file()]
    steps_stored = sorted(json.loads((p / "trainer.json").read_text())["step"] for p in stored)
    assert steps_stored[-1] == STEPS and all((p / "state.safetensors").stat().st_size > 0 for p in stored)
