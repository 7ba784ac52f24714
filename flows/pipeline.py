"""The whole pipeline as one Prefect flow on Ray: the stages of ``dvc.yaml``, in the same order.

``python -m flows.pipeline --params params.yaml`` runs ``prepare → vae → latents → prior → stage1 →
stage2 → evaluate``: single stages as Ray tasks (training stages with ``--train-gpus`` GPUs each),
``latents`` fanned out per shard and ``evaluate`` per job, every task retried. ``--publish``
then puts the data, the model directory and the report into the artifact store (``storage:`` in
params.yaml; ``--store s3://bucket/prefix`` overrides). DVC remains the way to *reproduce*
(``dvc repro`` skips what is up to date); this flow is the way to *scale out and schedule*.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect_ray.context import remote_options

from flows.common import RayOptions, prefect_api, ray_task_runner, shutdown_ray
from flows.evaluate import evaluate_on_ray
from flows.latents import encode_latents_on_ray
from flows.tasks import publish_task, stage_task
from gnvc.stages import STAGES

TRAINING_STAGES = ("vae", "prior", "stage1", "stage2")


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
    report = Path("reports/evaluate")
    if "evaluate" in stages and report.is_dir():
        out.append((str(report.resolve()), f"reports/{profile}/{run_id}"))
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
) -> dict[str, Any]:
    """Run ``stages`` of the pipeline in order on the flow's Ray task runner; return their metrics."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
    previous = os.getcwd()
    os.chdir(cwd)  # params hold relative paths; restored below
    try:
        return _run_stages(params, stages, cwd, task_cpus, task_gpus, train_cpus, train_gpus, train_threads, publish)
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
) -> dict[str, Any]:
    """The body of :func:`pipeline_flow`, run in ``cwd``."""
    logger = get_run_logger()
    results: dict[str, Any] = {}
    for name in [s for s in STAGES if s in stages]:  # dvc.yaml's order, whatever the caller's
        t0 = time.perf_counter()
        if name == "latents":
            results[name] = encode_latents_on_ray(params, task_cpus, task_gpus)
        elif name == "evaluate":
            results[name] = evaluate_on_ray(params, task_cpus, task_gpus)
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
        from prefect.runtime import flow_run

        storage = dict(params.get("storage") or {})
        run_id = str(flow_run.get_id() or int(time.time()))
        futures = [publish_task.submit(storage, local, key) for local, key in artifact_keys(params, stages, run_id)]
        results["published"] = [f.result() for f in futures]
    return results


def run_pipeline(
    params: dict[str, Any],
    stages: list[str] | None = None,
    opts: RayOptions | None = None,
    *,
    train_cpus: float | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    """Run :func:`pipeline_flow` on Ray with one Prefect API for all workers."""
    opts = opts or RayOptions()
    cpus = train_cpus if train_cpus is not None else float(opts.num_cpus or os.cpu_count() or 1)
    with prefect_api():
        try:
            return pipeline_flow.with_options(task_runner=ray_task_runner(opts))(
                params=params,
                stages=list(stages or STAGES),
                cwd=str(Path.cwd()),
                task_cpus=opts.task_cpus,
                task_gpus=opts.task_gpus,
                train_cpus=cpus,
                train_gpus=opts.train_gpus,
                train_threads=max(1, int(cpus)),
                publish=publish,
            )
        finally:
            if opts.address == "local":
                shutdown_ray()


if __name__ == "__main__":
    from flows.cli import main

    main(default_stages="all")
