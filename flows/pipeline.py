"""The whole pipeline as one Prefect flow on Ray: the stages of ``dvc.yaml``, in the same order.

``python -m flows.pipeline --params params.yaml`` runs ``prepare → vae → latents → prior → stage1 →
stage2 → evaluate``: single stages as Ray tasks (training stages with ``--train-gpus`` GPUs each),
``latents`` fanned out per shard and ``evaluate`` per job, every task retried. ``--publish``
then puts the data, the model directory and the report into the artifact store (``storage:`` in
params.yaml; ``--store s3://bucket/prefix`` overrides). The evaluation report of a run is
``reports/runs/<run id>/``, published as ``reports/<run id>/``. DVC remains the way to *reproduce*
(``dvc repro`` skips what is up to date); this flow is the way to *scale out and schedule*.
Arguments: :mod:`flows.cli` (checked before Prefect and Ray are imported).
"""

# ruff: noqa: E402 - the imports follow the early `__main__` exit on purpose (Prefect is slow to import)
from __future__ import annotations

if __name__ == "__main__":  # check the arguments before Prefect and Ray are imported (flows/cli.py)
    import sys

    from flows.cli import main

    sys.exit(main("pipeline"))

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect_ray.context import remote_options

from flows.cli import TRAINING_STAGES
from flows.common import RayOptions, TaskRequest, new_run_id, run_flow_on_ray
from flows.evaluate import evaluate_on_ray, report_dir
from flows.latents import encode_latents_on_ray
from flows.tasks import publish_task, stage_task
from gnvc.stages import STAGES


def artifact_keys(params: dict[str, Any], stages: list[str], run_id: str) -> list[tuple[str, str]]:
    """(absolute local directory, store key) of every artifact the run produced, content-addressed
    (absolute: the publish tasks run in Ray workers, whose working directory is not ours)."""
    profile = str(params.get("profile", "tiny"))
    out: list[tuple[str, str]] = []
    clips = Path(str((params.get("data") or {}).get("out_dir", "data/clips")))
    if "prepare" in stages and (clips / "manifest.json").is_file():
        digest = json.loads((clips / "manifest.json").read_text())["dataset_sha256"]
        out.append((str(clips.resolve()), f"data/clips/{digest[:16]}"))
    latents = Path(str((params.get("latents") or {}).get("out_dir", "data/latents")))
    if "latents" in stages and (latents / "manifest.json").is_file():
        m = json.loads((latents / "manifest.json").read_text())
        key = f"{m['clips_manifest']['dataset_sha256'][:16]}-{m['vae']['weights_sha256'][:16]}"
        out.append((str(latents.resolve()), f"data/latents/{key}"))
    model = Path("models") / profile
    if "stage2" in stages and (model / "model_index.json").is_file():
        digest = json.loads((model / "model_index.json").read_text()).get("weights_hash", "unhashed")
        out.append((str(model.resolve()), f"models/{profile}/{digest}"))
    report = report_dir(run_id)
    if "evaluate" in stages and report.is_dir():
        out.append((str(report.resolve()), f"reports/{run_id}"))
    return out


@flow(name="gnvc-pipeline", log_prints=True)
def pipeline_flow(
    params: dict[str, Any],
    stages: list[str],
    cwd: str,
    task_cpus: float = 1.0,
    task_gpus: float = 0.0,
    train_cpus: float = 1.0,
    train_gpus: float = 0.0,
    train_threads: int = 0,
    publish: bool = False,
    train_workers: int = 1,
) -> dict[str, Any]:
    """Run ``stages`` of the pipeline in order on the flow's Ray task runner; return their metrics
    (and ``run_id``: the evaluation report is ``reports/runs/<run_id>/``)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
    previous = os.getcwd()
    os.chdir(cwd)  # params hold relative paths; restored below
    try:
        return _run_stages(
            params, stages, cwd, task_cpus, task_gpus, train_cpus, train_gpus, train_threads, publish, train_workers
        )
    finally:
        os.chdir(previous)


def _run_stages(
    params: dict[str, Any],
    stages: list[str],
    cwd: str,
    task_cpus: float,
    task_gpus: float,
    train_cpus: float,
    train_gpus: float,
    train_threads: int,
    publish: bool,
    train_workers: int = 1,
) -> dict[str, Any]:
    """The body of :func:`pipeline_flow`, run in ``cwd``."""
    logger = get_run_logger()
    run_id = new_run_id()
    results: dict[str, Any] = {"run_id": run_id}
    for name in [s for s in STAGES if s in stages]:  # dvc.yaml's order, whatever the caller's
        t0 = time.perf_counter()
        if name == "latents":
            results[name] = encode_latents_on_ray(params, task_cpus, task_gpus)
        elif name == "evaluate":
            results[name] = evaluate_on_ray(params, task_cpus, task_gpus, run_id=run_id)
        elif name in TRAINING_STAGES and train_workers > 1:
            # Ray Train from the flow's process (connected to the tasks' Ray): train_workers workers with
            # train_cpus/train_gpus each, the global batch unchanged (gnvc stage NAME --workers N).
            from gnvc.stages.runner import run_stage

            results[name] = run_stage(
                name, params, workers=train_workers, gpus_per_worker=train_gpus, cpus_per_worker=train_cpus
            )
        else:
            training = name in TRAINING_STAGES
            options: dict[str, Any] = {"num_cpus": train_cpus if training else task_cpus}
            if training and train_gpus:
                options["num_gpus"] = train_gpus
            with remote_options(**options):
                future = stage_task.with_options(name=f"stage-{name}").submit(
                    name, params, cwd, threads=train_threads if training else 0
                )
            results[name] = future.result()
        logger.info("stage %s done in %.1f s", name, time.perf_counter() - t0)
    if publish:
        storage = dict(params.get("storage") or {})
        futures = [publish_task.submit(storage, local, key) for local, key in artifact_keys(params, stages, run_id)]
        results["published"] = [f.result() for f in futures]
    return results


def resource_requests(stages: list[str], opts: RayOptions, train_cpus: float) -> list[TaskRequest]:
    """What the selected stages' tasks ask Ray for (checked against the cluster before any runs)."""
    requests = []
    if any(s not in TRAINING_STAGES for s in stages):
        requests.append(TaskRequest("a fan-out task (--task-cpus/--task-gpus)", opts.task_cpus, opts.task_gpus))
    if any(s in TRAINING_STAGES for s in stages):
        requests.append(TaskRequest("a training-stage task (--train-cpus/--train-gpus)", train_cpus, opts.train_gpus))
    return requests


def run_pipeline(
    params: dict[str, Any],
    stages: list[str] | None = None,
    opts: RayOptions | None = None,
    *,
    train_cpus: float | None = None,
    publish: bool = False,
    train_workers: int = 1,
) -> dict[str, Any]:
    """Run :func:`pipeline_flow` on Ray (:func:`flows.common.run_flow_on_ray`); training tasks take
    ``train_cpus`` CPUs (default: the local Ray's slots, or this machine's cores); with
    ``train_workers`` > 1 each of that many Ray Train workers does (default: the slots / workers)."""
    opts = opts or RayOptions()
    stages = list(stages or STAGES)
    cpus = train_cpus if train_cpus is not None else float(opts.num_cpus or os.cpu_count() or 1)
    if train_cpus is None and train_workers > 1:
        cpus = max(1.0, float(int(cpus) // train_workers))
    return run_flow_on_ray(
        pipeline_flow,
        opts,
        resource_requests(stages, opts, cpus),
        params=params,
        stages=stages,
        cwd=str(Path.cwd()),
        task_cpus=opts.task_cpus,
        task_gpus=opts.task_gpus,
        train_cpus=cpus,
        train_gpus=opts.train_gpus,
        train_threads=max(1, int(cpus)),
        publish=publish,
        train_workers=train_workers,
    )
