"""Flows for Prefect deployments (``infra/prefect/prefect.yaml``): simple parameters, Ray inside.

A deployment's parameters must be plain values a schedule or the UI can hold, and a worker already
has its ``PREFECT_API_URL``, so these wrappers read ``params.yaml`` themselves and run the real
flows (:mod:`flows.pipeline`, :mod:`flows.evaluate`) as subflows through
:func:`flows.common.run_flow_on_ray` — by default on the cluster the worker's machine belongs to
(``ray_address="auto"``), with impossible resource requests refused before any task starts
(``resource_wait_s``: how long an autoscaling cluster may take to start a GPU node first).
The evaluation's report is ``reports/runs/<run id>/``, published as ``reports/<run id>/``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.cli import parse_stages
from flows.common import RayOptions
from flows.evaluate import run_evaluate
from flows.pipeline import run_pipeline
from gnvc.stages.runner import load_params


@flow(name="gnvc-pipeline-scheduled", log_prints=True)
def scheduled_pipeline(
    params_path: str = "params.yaml",
    stages: str = "all",
    ray_address: str = "auto",
    train_gpus: float = 1.0,
    task_gpus: float = 0.0,
    publish: bool = True,
    resource_wait_s: float = 0.0,
    train_cpus: float = 1.0,
) -> dict[str, Any]:
    """The whole pipeline (or ``stages``, comma-separated) on the Ray cluster, artifacts published."""
    params = load_params(params_path)
    opts = RayOptions(address=ray_address, train_gpus=train_gpus, task_gpus=task_gpus, resource_wait_s=resource_wait_s)
    return run_pipeline(params, parse_stages(stages), opts, train_cpus=train_cpus, publish=publish)


@flow(name="gnvc-evaluate-scheduled", log_prints=True)
def scheduled_evaluation(
    params_path: str = "params.yaml",
    ray_address: str = "auto",
    task_gpus: float = 0.0,
    publish: bool = True,
    resource_wait_s: float = 0.0,
) -> dict[str, Any]:
    """Evaluate ``models/<profile>`` against the anchors, one Ray task per job; the run's report
    (``reports/runs/<run id>/``) is published to the artifact store as ``reports/<run id>/``."""
    params = load_params(params_path)
    opts = RayOptions(address=ray_address, task_gpus=task_gpus, resource_wait_s=resource_wait_s)
    return run_evaluate(params, opts, publish=publish)
