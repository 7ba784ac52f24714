"""Prefect flows on a real local Ray (2 CPU slots, 1 logical GPU) and Prefect's test harness.

Runs only in a loopback-only network namespace (see conftest.py; test_ray_netns.py re-runs this
file there). One Ray cluster serves the module: RayTaskRunner attaches to it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from gnvc.data.shards import read_latent_shard, read_manifest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_opts(prefect_harness):
    """A fresh local Ray whose workers report to the harness's Prefect API."""
    import ray

    from flows.common import RayOptions, ray_task_runner

    opts = RayOptions(num_cpus=2, num_gpus=1, temp_dir=tempfile.mkdtemp(prefix="gnvc-ray-", dir="/tmp"))
    kwargs = dict(ray_task_runner(opts).init_kwargs)
    ray.init(address="local", **kwargs)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    try:
        yield opts
    finally:
        ray.shutdown()


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_latents_flow_fans_out_over_ray(ray_opts, mini_clips: Path, mini_latents: Path, tiny_model_dir: Path,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from flows.common import ray_task_runner
    from flows.latents import latents_flow

    params = {
        "profile": "tiny",
        "latents": {"clips_manifest": str(mini_clips), "vae": str(tiny_model_dir),
                    "out_dir": str(tmp_path / "lat"), "batch_size": 3},
    }  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the flow writes reports/stages/latents.json here
    state = latents_flow.with_options(task_runner=ray_task_runner(ray_opts))(params=params, return_state=True)
    assert state.is_completed()
    metrics = state.result()
    assert metrics["clips"] == 9 and metrics["shards"] == 4
    assert metrics["workers"] == 2  # two Ray worker processes shared the four shards
    runs = _task_runs(state.state_details.flow_run_id)
    assert sorted(r.name.split("-")[0] + "-" + r.name.split("-")[1] for r in runs) == ["encode-shard"] * 4
    assert all(r.state.is_completed() for r in runs)  # every worker reported to the one API server
    # Same latents as the in-process stage (float tolerance: workers use 1 thread, the stage more).
    ray_man, ref_man = read_manifest(tmp_path / "lat"), read_manifest(mini_latents)
    assert [c["clip_id"] for c in ray_man.clips()] == [c["clip_id"] for c in ref_man.clips()]
    for s in ref_man.shards:
        for a, b in zip(read_latent_shard(ray_man.root / s["path"]), read_latent_shard(ref_man.root / s["path"]),
                        strict=True):  # fmt: skip
            np.testing.assert_allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)


def flaky_square(item: tuple[str, int]) -> int:
    """Fails on its first attempt per item (a crashed worker, a lost node), succeeds on the second."""
    folder, x = item
    marker = Path(folder) / f"attempt-{x}"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts == 1:
        raise RuntimeError(f"transient failure of item {x}")
    return x * x


def gpu_ids(_: int) -> list:
    import ray

    return [str(g) for g in ray.get_gpu_ids()]


def test_a_task_that_fails_once_is_retried_and_the_flow_completes(ray_opts, tmp_path: Path) -> None:
    from prefect import flow

    from flows.common import ray_map, ray_task_runner
    from flows.tasks import TASK_RETRIES, call_task

    assert TASK_RETRIES >= 1

    @flow(name="retry-test")
    def squares(folder: str) -> list[int]:
        return ray_map(call_task, flaky_square, [(folder, x) for x in range(3)])

    state = squares.with_options(task_runner=ray_task_runner(ray_opts))(str(tmp_path), return_state=True)
    assert state.is_completed() and state.result() == [0, 1, 4]
    assert sorted(p.read_text() for p in tmp_path.glob("attempt-*")) == ["2", "2", "2"]
    runs = _task_runs(state.state_details.flow_run_id)
    assert len(runs) == 3 and all(r.run_count == 2 and r.state.is_completed() for r in runs)


def test_gpu_requests_reach_ray(ray_opts) -> None:
    from prefect import flow

    from flows.common import ray_map, ray_task_runner
    from flows.tasks import call_task

    @flow(name="gpu-test")
    def on_gpu() -> list:
        return ray_map(call_task, gpu_ids, [0], cpus=1, gpus=1)

    assert on_gpu.with_options(task_runner=ray_task_runner(ray_opts))() == [["0"]]


def test_pipeline_flow_runs_stages_and_publishes(ray_opts, tiny_model_dir: Path, tmp_path: Path) -> None:
    from flows.common import ray_task_runner
    from flows.pipeline import pipeline_flow
    from gnvc.storage import LocalStore

    from .conftest import MINI_DATA

    params = {
        "profile": "tiny",
        "data": {**MINI_DATA, "out_dir": "data/clips"},
        "latents": {"vae": str(tiny_model_dir), "batch_size": 3},
        "storage": {"url": str(tmp_path / "store")},
    }
    (tmp_path / "work").mkdir()
    result = pipeline_flow.with_options(task_runner=ray_task_runner(ray_opts))(
        params=params, stages=["latents", "prepare"], cwd=str(tmp_path / "work"), publish=True
    )
    assert result["prepare"]["clips_train"] == 7 and result["latents"]["clips"] == 9
    work = tmp_path / "work"
    assert json.loads((work / "reports/stages/latents.json").read_text())["clips"] == 9
    published = {p["url"].rsplit("/", 3)[-3] + "/" + p["url"].rsplit("/", 3)[-2] for p in result["published"]}
    assert published == {"data/clips", "data/latents"}
    store = LocalStore(tmp_path / "store")
    digest = read_manifest(work / "data/clips").data["dataset_sha256"]
    store.get_dir(f"data/clips/{digest[:16]}", tmp_path / "fetched")
    assert (tmp_path / "fetched/manifest.json").read_bytes() == (work / "data/clips/manifest.json").read_bytes()


def test_the_nightly_deployment_publishes_one_report_per_run(
    ray_opts, mini_clips: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluate-nightly deployment's flow (its parameters from prefect.yaml), run twice: two
    reports side by side in reports/runs/, both in the store, fetched back byte for byte."""
    import yaml

    from flows.deployments import scheduled_evaluation
    from gnvc.storage import open_store

    from .conftest import REPO
    from .test_flows_runs import write_params

    spec = yaml.safe_load((REPO / "infra/prefect/prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "evaluate-nightly")
    assert nightly["parameters"]["publish"] is True
    write_params(tmp_path, mini_clips, tiny_model_dir)
    monkeypatch.chdir(tmp_path)  # a deployment runs in GNVC_REPO_DIR; params.yaml is read from there
    parameters = {**nightly["parameters"], "ray_address": "local"}  # "auto" on the cluster; here the test's Ray
    runs = [scheduled_evaluation(**parameters) for _ in range(2)]
    ids = [r["run_id"] for r in runs]
    assert len(set(ids)) == 2
    assert sorted(p.name for p in (tmp_path / "reports/runs").iterdir()) == sorted(ids)
    store = open_store(str(tmp_path / "store"))
    for run_id, result in zip(ids, runs, strict=True):
        assert result["published"]["url"].endswith(f"/reports/{run_id}")
        local = tmp_path / "reports/runs" / run_id
        fetched = tmp_path / "fetched" / run_id
        store.get_dir(f"reports/{run_id}", fetched)
        files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(fetched) for p in fetched.rglob("*") if p.is_file())
        assert all((local / f).read_bytes() == (fetched / f).read_bytes() for f in files)


def test_impossible_resource_requests_are_refused_before_any_task(ray_opts, mini_clips: Path, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """The module's cluster has 2 CPUs and 1 GPU: 2 GPUs or 3 CPUs per task could never start."""
    from dataclasses import replace

    from flows.common import ClusterResourceError
    from flows.latents import run_latents
    from flows.pipeline import run_pipeline

    from .test_flows_runs import write_params

    params = yaml_load(write_params(tmp_path, mini_clips, tiny_model_dir))
    with pytest.raises(ClusterResourceError, match=r"encode-shard task .* asks for 1 CPU, 2 GPU.* 2 CPU, 1 GPU"):
        run_latents(params, replace(ray_opts, task_gpus=2))
    with pytest.raises(ClusterResourceError, match=r"training-stage task .* asks for 3 CPU, 0 GPU"):
        run_pipeline(params, ["vae"], ray_opts, train_cpus=3)
    assert not (tmp_path / "latents").exists()
    import ray

    assert ray.is_initialized()  # the test's cluster was not shut down by a refusal


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
