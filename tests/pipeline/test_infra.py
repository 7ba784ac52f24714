"""infra/: the Prefect deployments point at real flows with valid schedules; the Ray configs and the
job entry point are well-formed."""

from __future__ import annotations

import importlib
import subprocess
import sys

import yaml

from .conftest import REPO


def test_prefect_deployments_resolve() -> None:
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    spec = yaml.safe_load((REPO / "infra/prefect/prefect.yaml").read_text())
    names = set()
    for d in spec["deployments"]:
        path, func = d["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow), d["entrypoint"]
        assert set(d.get("parameters", {})) <= set(flow.parameters.properties), d["name"]
        assert d["work_pool"]["name"] == "gnvc-pool"
        for s in d.get("schedules", []):
            CronSchedule(cron=s["cron"], timezone=s.get("timezone"))  # raises on an invalid schedule
        names.add(d["name"])
    assert {"evaluate-nightly", "pipeline"} <= names
    nightly = next(d for d in spec["deployments"] if d["name"] == "evaluate-nightly")
    assert nightly["parameters"]["publish"] is True  # its description says the report is published
    # The cluster runs token auth (`ray start --head`): flow runs are Ray clients and need the mode.
    assert spec["definitions"]["work_pool"]["job_variables"]["env"]["RAY_AUTH_MODE"] == "token"


def test_ray_cluster_configs_and_job_entry_point() -> None:
    for name in ("cluster.yaml", "cluster-local.yaml"):
        cfg = yaml.safe_load((REPO / "infra/ray" / name).read_text())
        assert cfg["provider"]["type"] in ("aws", "local") and cfg["head_start_ray_commands"]
        assert any("RAY_USAGE_STATS_ENABLED=0" in c for c in cfg["head_start_ray_commands"])
        # Token auth on every node, with one token (copied from the launching machine) for all.
        for key in ("head_start_ray_commands", "worker_start_ray_commands"):
            starts = [c for c in cfg[key] if "ray start" in c]
            assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), (name, key)
        assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    out = subprocess.run([sys.executable, "infra/ray/train_job.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "--train-gpus" in out.stdout
