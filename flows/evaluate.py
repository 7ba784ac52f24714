"""Evaluation as a Prefect flow: every (video, method, rate point) job is a Ray task.

The evaluation stage (``gnvc.stages.evaluate.run``) builds the jobs and assembles the report; this
flow only gives it a ``map_fn`` that runs each job as a retried Prefect task on Ray (GPU requests
through ``--task-gpus``). ``infra/prefect/prefect.yaml`` schedules it nightly.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from prefect import flow

from flows.common import RayOptions, prefect_api, ray_map, ray_task_runner, shutdown_ray
from flows.tasks import call_task
from gnvc.errors import ConfigError
from gnvc.stages.runner import record_metrics, stage_module


def evaluate_on_ray(params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0) -> dict[str, Any]:
    """Inside a flow whose task runner is Ray: the evaluate stage with a Ray-backed ``map_fn``."""
    module = stage_module("evaluate")
    if "map_fn" not in inspect.signature(module.run).parameters:
        raise ConfigError("gnvc.stages.evaluate.run(params, map_fn=...) does not take map_fn: cannot fan out")

    def map_fn(fn: Any, items: Any) -> list[Any]:
        return ray_map(call_task, fn, items, cpus=task_cpus, gpus=task_gpus)

    t0 = time.perf_counter()
    result = module.run(params, map_fn=map_fn)
    return record_metrics("evaluate", result, time.perf_counter() - t0)


@flow(name="gnvc-evaluate", log_prints=True)
def evaluate_flow(params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0) -> dict[str, Any]:
    """Evaluate ``models/<profile>`` against the anchors; the report goes under ``reports/``."""
    return evaluate_on_ray(params, task_cpus, task_gpus)


def run_evaluate(params: dict[str, Any], opts: RayOptions | None = None) -> dict[str, Any]:
    opts = opts or RayOptions()
    with prefect_api():
        try:
            return evaluate_flow.with_options(task_runner=ray_task_runner(opts))(
                params=params, task_cpus=opts.task_cpus, task_gpus=opts.task_gpus
            )
        finally:
            if opts.address == "local":
                shutdown_ray()


if __name__ == "__main__":
    from flows.cli import main

    main(default_stages="evaluate")
