"""Latent encoding as a Prefect flow: one Ray task per clip shard, then one manifest.

``python -m flows.latents --params params.yaml --num-cpus 2`` encodes ``data/clips`` into
``data/latents`` exactly as ``gnvc stage latents`` does (same plan, same per-shard function, same
finalisation), with each shard a retried Ray task. On a multi-node cluster the data directories
must be on a filesystem every node mounts (the shards are written where the plan says).
Arguments: :mod:`flows.cli` (checked before Prefect and Ray are imported).
"""

# ruff: noqa: E402 - the imports follow the early `__main__` exit on purpose (Prefect is slow to import)
from __future__ import annotations

if __name__ == "__main__":  # check the arguments before Prefect and Ray are imported (flows/cli.py)
    import sys

    from flows.cli import main

    sys.exit(main("latents"))

import time
from typing import Any

from prefect import flow
from prefect_ray.context import remote_options

from flows.common import RayOptions, TaskRequest, run_flow_on_ray
from flows.tasks import encode_shard_task
from gnvc.data.latents import abort_latents, finalize_latents, plan_latents
from gnvc.stages.runner import record_metrics


def encode_latents_on_ray(params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0) -> dict[str, Any]:
    """Inside a flow whose task runner is Ray: plan, fan out ``encode-shard`` tasks, finalize."""
    t0 = time.perf_counter()
    plan = plan_latents(params.get("latents") or {}, profile=str(params.get("profile", "tiny")))
    options: dict[str, Any] = {"num_cpus": task_cpus}
    if task_gpus:
        options["num_gpus"] = task_gpus
    try:
        with remote_options(**options):
            futures = encode_shard_task.map(plan.jobs)
        results = [f.result() for f in futures]
    except BaseException:
        abort_latents(plan)
        raise
    metrics = finalize_latents(plan, results)
    wall = time.perf_counter() - t0
    metrics["workers"] = len({r["pid"] for r in results})
    metrics["clips_per_s_wall"] = round(metrics["clips"] / wall, 3) if wall > 0 else 0.0
    return record_metrics("latents", metrics, wall)


@flow(name="gnvc-latents", log_prints=True)
def latents_flow(params: dict[str, Any], task_cpus: float = 1.0, task_gpus: float = 0.0) -> dict[str, Any]:
    """VAE-encode every clip shard on Ray; write the latent shards and their manifest."""
    return encode_latents_on_ray(params, task_cpus, task_gpus)


def run_latents(params: dict[str, Any], opts: RayOptions | None = None) -> dict[str, Any]:
    """Run :func:`latents_flow` on Ray (:func:`flows.common.run_flow_on_ray`)."""
    opts = opts or RayOptions()
    shard = TaskRequest("an encode-shard task (--task-cpus/--task-gpus)", opts.task_cpus, opts.task_gpus)
    return run_flow_on_ray(latents_flow, opts, [shard], params=params, task_cpus=opts.task_cpus,
                           task_gpus=opts.task_gpus)  # fmt: skip
