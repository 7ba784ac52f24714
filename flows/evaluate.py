"""Evaluation as a Prefect flow: every (video, method, rate point) job is a Ray task.

The evaluation stage (``gnvc.stages.evaluate.run``) builds the jobs and assembles the report; this
flow only gives it a ``map_fn`` that runs each job as a retried Prefect task on Ray (GPU requests
through ``--task-gpus``). Each flow run writes its own report, ``reports/runs/<run id>/`` (the run
id is the UTC start time and the Prefect flow run id's head), so runs never overwrite each other;
with ``publish`` the report goes to the artifact store under ``reports/<run id>/``.
``infra/prefect/prefect.yaml`` schedules it nightly (``flows.deployments.scheduled_evaluation``).

``python -m flows.evaluate [--publish]`` runs this flow (arguments: :mod:`flows.cli`).
"""

# ruff: noqa: E402 - the imports follow the early `__main__` exit on purpose (Prefect is slow to import)
from __future__ import annotations

if __name__ == "__main__":  # check the arguments before Prefect and Ray are imported (flows/cli.py)
    import sys

    from flows.cli import main

    sys.exit(main("evaluate"))

import copy
import inspect
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.common import (
    REPORT_RUNS_DIR,
    RayOptions,
    TaskRequest,
    new_run_id,
    ray_map,
    run_flow_on_ray,
)
from flows.tasks import call_task, publish_task
from gnvc.errors import ConfigError
from gnvc.stages.runner import record_metrics, stage_module


def report_dir(run_id: str) -> Path:
    """Where the evaluation report of flow run ``run_id`` goes (relative to the repository root)."""
    return Path(REPORT_RUNS_DIR) / run_id


def evaluate_on_ray(
    params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0, *, run_id: str
) -> dict[str, Any]:
    """Inside a flow whose task runner is Ray: the evaluate stage with a Ray-backed ``map_fn``,
    its report (and metrics, ``evaluate.json``) in ``reports/runs/<run_id>/``."""
    module = stage_module("evaluate")
    if "map_fn" not in inspect.signature(module.run).parameters:
        raise ConfigError("gnvc.stages.evaluate.run(params, map_fn=...) does not take map_fn: cannot fan out")
    if not isinstance(params.get("evaluate"), dict):
        raise ConfigError("params.yaml has no 'evaluate:' section")
    out = report_dir(run_id)
    params = copy.deepcopy(params)
    params["evaluate"]["out_dir"] = str(out)

    def map_fn(fn: Any, items: Any) -> list[Any]:
        return ray_map(call_task, fn, items, cpus=task_cpus, gpus=task_gpus)

    t0 = time.perf_counter()
    result = module.run(params, map_fn=map_fn)
    metrics = record_metrics("evaluate", result, time.perf_counter() - t0, metrics_dir=out)
    return {**metrics, "run_id": run_id, "report_dir": str(out)}


def publish_report(params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Put ``reports/runs/<run_id>/`` into the artifact store (``storage:``) as ``reports/<run_id>/``
    (an absolute path: the publish task runs in a Ray worker, whose working directory is not ours)."""
    local = str(report_dir(run_id).resolve())
    return publish_task.submit(dict(params.get("storage") or {}), local, f"reports/{run_id}").result()


@flow(name="gnvc-evaluate", log_prints=True)
def evaluate_flow(
    params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0, publish: bool = False
) -> dict[str, Any]:
    """Evaluate ``models/<profile>`` against the anchors into ``reports/runs/<run id>/``; with
    ``publish``, put that report into the artifact store under ``reports/<run id>/``."""
    run_id = new_run_id()
    result = evaluate_on_ray(params, task_cpus, task_gpus, run_id=run_id)
    if publish:
        result["published"] = publish_report(params, run_id)
    return result


def run_evaluate(params: dict[str, Any], opts: RayOptions | None = None, *, publish: bool = False) -> dict[str, Any]:
    """Run :func:`evaluate_flow` on Ray (:func:`flows.common.run_flow_on_ray`)."""
    opts = opts or RayOptions()
    fan_out = TaskRequest("an evaluation job (--task-cpus/--task-gpus)", opts.task_cpus, opts.task_gpus)
    return run_flow_on_ray(
        evaluate_flow, opts, [fan_out], params=params, task_cpus=opts.task_cpus, task_gpus=opts.task_gpus,
        publish=publish,
    )  # fmt: skip
