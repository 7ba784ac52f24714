"""Prefect tasks: thin wrappers over ``gnvc`` functions (no second implementation of any stage).

Retries: every task is retried (``TASK_RETRIES`` times, with growing delays) — a worker lost to a
preempted node, an OOM kill or a flaky mount costs a re-run of one shard or one evaluation job,
not the flow. Tasks that take big or unhashable inputs (VAE jobs, videos) use ``NO_CACHE``: their
results live in the output directory, which is what DVC versions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.common import apply_offline_env

apply_offline_env()

TASK_RETRIES = 2
RETRY_DELAYS_S = [1, 5]


@task(name="encode-shard", retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S, cache_policy=NO_CACHE)
def encode_shard_task(job: Any) -> dict[str, Any]:
    """VAE-encode one clip shard into its latent shard (``gnvc.data.latents.encode_shard``)."""
    from gnvc.data.latents import encode_shard
    from gnvc.stages.runner import configure_threads

    configure_threads()
    return encode_shard(job)


@task(name="call", retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S, cache_policy=NO_CACHE)
def call_task(fn: Callable[[Any], Any], item: Any) -> Any:
    """``fn(item)`` as a task: one unit of a fan-out (an evaluation job, …)."""
    from gnvc.stages.runner import configure_threads

    configure_threads()
    return fn(item)


@task(name="stage", retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S, cache_policy=NO_CACHE)
def stage_task(name: str, params: dict[str, Any], cwd: str, threads: int = 0) -> dict[str, Any]:
    """Run one pipeline stage (``gnvc.stages.runner.run_stage``) in ``cwd`` (the repository root:
    params hold relative paths, and a Ray worker's working directory is not the driver's), with
    ``threads`` torch threads (a training task gets the cores it reserved)."""
    from gnvc.stages.runner import run_stage

    os.chdir(cwd)
    if threads > 0:
        os.environ["GNVC_NUM_THREADS"] = str(threads)
    return run_stage(name, params)


@task(name="publish", retries=TASK_RETRIES, retry_delay_seconds=RETRY_DELAYS_S, cache_policy=NO_CACHE)
def publish_task(storage: dict[str, Any], local_dir: str, key: str) -> dict[str, Any]:
    """Publish a directory to the artifact store (files, then the index: atomic for readers)."""
    from gnvc.storage import store_from_params

    store = store_from_params(storage)
    index = store.put_dir(local_dir, key)
    return {"url": f"{store.url}/{key}", "files": len(index["files"])}
