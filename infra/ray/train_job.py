"""Entry point for ``ray job submit``: the pipeline's stages on a Ray cluster, without Prefect.

    export RAY_AUTH_MODE=token     # `ray start --head` turns token auth on: every client needs this
    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env-json '{"excludes": [".git", ".venv", "data", "build", "models", "reports", "checkpoints"]}' \
        -- python infra/ray/train_job.py --workdir /mnt/shared/gnvc --stages vae,latents,prior,stage1,stage2 \
           --train-gpus 1 --publish

Each stage is a Ray task (training stages with ``--train-gpus`` GPUs and ``--train-cpus`` CPUs,
retried ``--retries`` times on a lost worker); ``latents`` is one task per clip shard. ``--workdir``
is where ``params.yaml``'s relative paths (data/, build/, models/) live: a filesystem every node
mounts, since the job's own working directory is a temporary copy. ``--publish`` puts the data
and the final model into the artifact store (``storage:`` in params.yaml, or ``--store``); an
``evaluate`` stage writes ``reports/runs/job-<time>/``, published as ``reports/job-<time>/``.
Tasks that no node of the cluster can run (``--train-gpus 1`` on CPU-only nodes) are refused
before any is submitted (``--resource-wait`` seconds for an autoscaler to add a node first).

``--train-workers N`` (N > 1) trains each training stage data-parallel on Ray Train from this
driver (``gnvc stage NAME --workers N``, :mod:`gnvc.training.ray_train`): N workers with
``--train-gpus`` GPUs (at most 1: a worker trains on one device) and ``--train-cpus`` CPUs each,
the global batch unchanged, checkpoints in ``--ray-storage``, the group restarted from its last
checkpoint up to ``--retries`` times. More GPUs for one stage means more workers, never one task
holding GPUs it does not use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

TRAINING_STAGES = ("vae", "prior", "stage1", "stage2")


def _run_stage(name: str, params: dict[str, Any], workdir: str, threads: int) -> dict[str, Any]:
    from gnvc.stages.runner import run_stage

    os.chdir(workdir)
    if threads > 0:
        os.environ["GNVC_NUM_THREADS"] = str(threads)
    return run_stage(name, params)


def _encode_shard(job: Any) -> dict[str, Any]:
    from gnvc.data.latents import encode_shard

    return encode_shard(job)


def _publish(storage: dict[str, Any], local: str, key: str) -> str:
    from gnvc.storage import store_from_params

    store = store_from_params(storage)
    store.put_dir(local, key)
    return f"{store.url}/{key}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run gnvc pipeline stages as Ray tasks (for `ray job submit`).")
    ap.add_argument("--workdir", default=os.getcwd(), help="directory params.yaml's relative paths refer to")
    ap.add_argument("--params", default="params.yaml", help="parameter file (relative to --workdir)")
    ap.add_argument("--stages", default="vae,latents,prior,stage1,stage2")
    ap.add_argument("--address", default="auto", help="Ray address (default: the cluster of `ray job submit`)")
    ap.add_argument("--train-gpus", type=float, default=1.0)
    ap.add_argument("--train-cpus", type=float, default=4.0)
    ap.add_argument("--train-workers", type=int, default=1, help="data-parallel Ray Train workers per training stage")
    ap.add_argument("--ray-storage", default=None, help="Ray Train checkpoints (default build/<profile>/ray_train)")
    ap.add_argument("--shard-cpus", type=float, default=1.0)
    ap.add_argument("--shard-gpus", type=float, default=0.0)
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a task whose worker died")
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--store", default=None, help="artifact store URL (overrides storage.url)")
    ap.add_argument("--resource-wait", type=float, default=0.0, help="seconds to wait for a node that fits the tasks")
    a = ap.parse_args(argv)
    if a.train_workers < 1 or not 0 <= a.train_gpus <= 1:
        sys.exit(
            "error: --train-gpus is per training worker, in [0, 1] (a worker trains on one device), and "
            "--train-workers ≥ 1: for N GPUs use --train-workers N --train-gpus 1"
        )

    import ray

    from flows.cli import UsageError, parse_stages
    from flows.common import REPORT_RUNS_DIR, ClusterResourceError, TaskRequest, check_resources
    from flows.pipeline import artifact_keys
    from gnvc.data.latents import abort_latents, finalize_latents, plan_latents
    from gnvc.stages.runner import load_params, record_metrics

    workdir = str(Path(a.workdir).resolve())
    os.chdir(workdir)
    params = load_params(a.params)
    if a.store:
        params.setdefault("storage", {})["url"] = a.store
    try:
        stages = parse_stages(a.stages)
    except UsageError as e:
        sys.exit(f"error: {e}")
    run_id = f"job-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    if "evaluate" in stages and isinstance(params.get("evaluate"), dict):
        params["evaluate"]["out_dir"] = f"{REPORT_RUNS_DIR}/{run_id}"  # never overwrite another run's report
    ray.init(address=a.address)
    requests = [TaskRequest("a shard task (--shard-cpus/--shard-gpus)", a.shard_cpus, a.shard_gpus)]
    if any(s in TRAINING_STAGES for s in stages):
        requests.append(TaskRequest("a training task (--train-cpus/--train-gpus)", a.train_cpus, a.train_gpus))
    try:
        check_resources(requests, wait_s=a.resource_wait)
    except ClusterResourceError as e:
        sys.exit(f"error: {e}")
    run_stage = ray.remote(max_retries=a.retries)(_run_stage)
    encode = ray.remote(max_retries=a.retries)(_encode_shard)
    results: dict[str, Any] = {}
    for name in stages:
        t0 = time.perf_counter()
        if name == "latents":
            plan = plan_latents(params.get("latents") or {}, profile=str(params.get("profile", "tiny")))
            try:
                refs = [encode.options(num_cpus=a.shard_cpus, num_gpus=a.shard_gpus).remote(j) for j in plan.jobs]
                shard_results = ray.get(refs)
            except BaseException:
                abort_latents(plan)
                raise
            results[name] = record_metrics(name, finalize_latents(plan, shard_results), time.perf_counter() - t0)
        elif name in TRAINING_STAGES and a.train_workers > 1:
            from gnvc.stages.runner import run_stage as run_here

            results[name] = run_here(
                name, params, workers=a.train_workers, gpus_per_worker=a.train_gpus, cpus_per_worker=a.train_cpus,
                ray_storage=a.ray_storage, max_failures=a.retries,
            )  # fmt: skip
        else:
            training = name in TRAINING_STAGES
            opts = {"num_cpus": a.train_cpus if training else 1, "num_gpus": a.train_gpus if training else 0}
            threads = int(a.train_cpus) if training else 1
            results[name] = ray.get(run_stage.options(**opts).remote(name, params, workdir, threads))
        print(f"stage {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    if a.publish:
        publish = ray.remote(max_retries=a.retries)(_publish)
        keys = artifact_keys(params, stages, run_id)
        results["published"] = ray.get([publish.remote(params.get("storage") or {}, d, k) for d, k in keys])
    json.dump(results, sys.stdout, indent=2, default=str)
    print()


if __name__ == "__main__":
    main()
