"""Flows for Prefect deployments (``infra/prefect/prefect.yaml``): simple parameters, Ray inside.

A deployment's parameters must be plain values a schedule or the UI can hold, and a worker already
has its ``PREFECT_API_URL``, so these wrappers read ``params.yaml`` themselves and run the real
flows (:mod:`flows.pipeline`, :mod:`flows.evaluate`) as subflows on a Ray task runner — by
default the cluster the worker's machine belongs to (``ray_address="auto"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.common import RayOptions, ray_task_runner
from flows.evaluate import evaluate_flow
from flows.pipeline import pipeline_flow
from gnvc.stages import STAGES
from gnvc.stages.runner import load_params


@flow(name="gnvc-pipeline-scheduled", log_prints=True)
def scheduled_pipeline(
    params_path: str = "params.yaml",
    stages: str = "all",
    ray_address: str = "auto",
    train_gpus: float = 1.0,
    task_gpus: float = 0.0,
    publish: bool = True,
) -> dict[str, Any]:
    """The whole pipeline (or ``stages``, comma-separated) on the Ray cluster, artifacts published."""
    params = load_params(params_path)
    names = list(STAGES) if stages == "all" else [s.strip() for s in stages.split(",") if s.strip()]
    opts = RayOptions(address=ray_address, train_gpus=train_gpus, task_gpus=task_gpus)
    return pipeline_flow.with_options(task_runner=ray_task_runner(opts))(
        params=params,
        stages=names,
        cwd=str(Path.cwd()),
        task_gpus=task_gpus,
        train_gpus=train_gpus,
        publish=publish,
    )


@flow(name="gnvc-evaluate-scheduled", log_prints=True)
def scheduled_evaluation(
    params_path: str = "params.yaml", ray_address: str = "auto", task_gpus: float = 0.0
) -> dict[str, Any]:
    """Evaluate ``models/<profile>`` against the anchors, one Ray task per job."""
    params = load_params(params_path)
    opts = RayOptions(address=ray_address, task_gpus=task_gpus)
    return evaluate_flow.with_options(task_runner=ray_task_runner(opts))(params=params, task_gpus=task_gpus)
