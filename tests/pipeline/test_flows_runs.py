"""The documented flow commands, run as written: ``python -m flows.latents`` / ``flows.evaluate``.

Each runs in a real subprocess that starts its own Prefect server and a fresh local Ray (this file
is ``ray``-marked: test_ray_netns.py runs it in a loopback-only network namespace). Checked:
each module runs *its own* flow (issue 10: both ran the whole pipeline flow), the evaluation
report goes to ``reports/runs/<run id>/`` and is published, no "View at http://…" link to the
run's short-lived Prefect server is printed, and ``--task-gpus 1`` on a cluster without GPUs is
refused with one ``error:`` line before any task is submitted (it used to wait forever).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO

pytestmark = pytest.mark.ray


def write_params(folder: Path, clips_manifest: Path, model_dir: Path) -> Path:
    """A params.yaml for the latents and evaluate flows on the miniature data (evaluation: one clip,
    one quality, PSNR only, no anchors: seconds, yet the real report code), store under ``folder``."""
    params = {
        "profile": "tiny",
        "latents": {"clips_manifest": str(clips_manifest), "vae": str(model_dir),
                    "out_dir": str(folder / "latents"), "batch_size": 3},
        "evaluate": {"weights": str(model_dir), "clips_manifest": str(clips_manifest), "split": "val",
                     "max_clips": 1, "anchors": [], "metrics": ["psnr_rgb"], "qualities": [0],
                     "refinement": "on", "visuals": False},
        "storage": {"url": str(folder / "store")},
    }  # fmt: skip
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for the module's runs: the first builds the server's database, the rest reuse it."""
    return tmp_path_factory.mktemp("prefect-home-cli")


def run_flow_cli(
    flow: str, args: list[str], cwd: Path, home: Path, timeout: float = 900
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))  # fmt: skip
    cmd = [sys.executable, "-m", f"flows.{flow}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def printed_result(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    """The flow's metrics: the JSON object the CLI prints last."""
    out = proc.stdout
    start = out.rfind("\n{\n") + 1 if not out.startswith("{\n") else 0
    return json.loads(out[start:])


def assert_no_dead_links(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert "View at" not in text and "/runs/flow-run/" not in text, "a link to a server that stops with the run"


def test_flows_latents_runs_the_latents_flow(mini_clips: Path, tiny_model_dir: Path, tmp_path: Path,
                                             prefect_home: Path) -> None:  # fmt: skip
    params = write_params(tmp_path, mini_clips, tiny_model_dir)
    proc = run_flow_cli("latents", ["--params", str(params), "--num-cpus", "2", "--task-cpus", "1"], tmp_path,
                        prefect_home)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = printed_result(proc)
    assert result["stage"] == "latents" and result["clips"] == 9 and result["shards"] == 4
    text = proc.stdout + proc.stderr
    assert "for flow 'gnvc-latents'" in text and "gnvc-pipeline" not in text
    assert (tmp_path / "latents/manifest.json").is_file()
    assert_no_dead_links(proc)


def test_flows_evaluate_runs_the_evaluate_flow_and_publishes_its_report(
    mini_clips: Path, tiny_model_dir: Path, tmp_path: Path, prefect_home: Path
) -> None:
    from gnvc.storage import open_store

    params = write_params(tmp_path, mini_clips, tiny_model_dir)
    proc = run_flow_cli("evaluate", ["--params", str(params), "--num-cpus", "2", "--publish"], tmp_path, prefect_home)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = printed_result(proc)
    text = proc.stdout + proc.stderr
    assert "for flow 'gnvc-evaluate'" in text and "gnvc-pipeline" not in text
    run_id = result["run_id"]
    assert result["report_dir"] == f"reports/runs/{run_id}" and result["clips"] == 1
    report = tmp_path / "reports/runs" / run_id
    assert (report / "report.json").is_file() and (report / "evaluate.json").is_file()
    assert not (tmp_path / "reports/evaluate").exists()  # the shared DVC output is left alone
    fetched = tmp_path / "fetched"
    open_store(str(tmp_path / "store")).get_dir(f"reports/{run_id}", fetched)
    assert (fetched / "report.json").read_bytes() == (report / "report.json").read_bytes()
    assert_no_dead_links(proc)


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused_before_any_task(
    mini_clips: Path, tiny_model_dir: Path, tmp_path: Path, prefect_home: Path
) -> None:
    params = write_params(tmp_path, mini_clips, tiny_model_dir)
    # No --num-gpus: Ray detects the machine's GPUs (none here), as on a CPU-only cluster.
    proc = run_flow_cli("latents", ["--params", str(params), "--num-cpus", "2", "--task-gpus", "1"], tmp_path,
                        prefect_home, timeout=600)  # fmt: skip
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no node of the Ray cluster can run the tasks: an encode-shard task"), last
    assert "asks for 1 CPU, 1 GPU" in last and "0 GPU" in last
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "Beginning flow run" not in proc.stdout + proc.stderr  # refused before the flow (and any task) ran
    assert not (tmp_path / "latents").exists()
