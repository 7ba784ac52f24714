"""``gnvc stage NAME --workers N``: a training stage on Ray Train's ``TorchTrainer`` (N processes).

Why Ray Train: the pipeline already runs on Ray (Prefect's RayTaskRunner, ``infra/ray``), and Ray
Train adds what a multi-process training needs around the data parallelism of
:mod:`gnvc.training.distributed`: it places N workers (``--gpus-per-worker`` GPUs and
``cpus_per_worker`` CPUs each), initialises ``torch.distributed`` (gloo on CPU, NCCL on GPU),
keeps the checkpoints rank 0 reports in ``--ray-storage`` (a folder or ``s3://bucket/prefix``),
and when a worker dies restarts the group (``FailureConfig(max_failures)``) with the last
reported checkpoint, which the Trainer resumes from. Each worker runs the unchanged stage code
(``gnvc.stages.<name>.run``) inside a :class:`WorkerGroup`.

Rank 0 alone writes the stage's outputs (model directory, checkpoints, export, logs); every rank
keeps the stage's params section unchanged, since it is the checkpoints' config fingerprint. The
global batch is the stage's ``batch_size`` at any worker count (each worker
takes ``batch_size / N`` rows); one that does not split is refused before Ray starts.

``--workers 1`` never comes here (nor imports Ray): :func:`gnvc.stages.runner.run_stage` runs
the stage in-process as before.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gnvc.errors import ConfigError, GnvcError
from gnvc.stages.runner import TRAINING_STAGES

# The batch keys each stage reads (and the defaults its code uses when params.yaml leaves them out):
# each must split evenly over the workers.
BATCH_KEYS: dict[str, dict[str, int]] = {
    "vae": {"batch_size": 2, "image_batch_size": 16},
    "prior": {"batch_size": 8},
    "stage1": {"batch_size": 8},
    "stage2": {"batch_size": 2},
}
RESULT_FILE = "gnvc_result.json"


def check_distributable(name: str, params: dict[str, Any], workers: int, gpus_per_worker: float = 0.0) -> None:
    """Refuse (ConfigError, before any process starts) what N workers cannot run as one process would."""
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    if not 0 <= gpus_per_worker <= 1:
        raise ConfigError(
            f"--gpus-per-worker must be in [0, 1], got {gpus_per_worker}: a worker trains on one device "
            "(use more workers for more GPUs)"
        )
    if name not in TRAINING_STAGES:
        raise ConfigError(f"--workers applies to the training stages ({', '.join(TRAINING_STAGES)}), not {name!r}")
    section = params.get(name)
    if not isinstance(section, dict):
        raise ConfigError(f"params.yaml has no '{name}:' section")
    for key, default in BATCH_KEYS[name].items():
        if key == "image_batch_size" and int(section.get("image_steps", 0)) <= 0:
            continue
        value = int(section.get(key, default))
        if value % workers:
            raise ConfigError(
                f"{name}.{key}={value} does not split over {workers} workers: the global batch stays "
                f"{key} at every worker count (each worker takes {key}/workers rows); use a multiple of {workers}"
            )


def storage_target(storage: str, params: dict[str, Any]) -> tuple[str, Any]:
    """``(storage_path, pyarrow filesystem or None)`` for Ray Train: a folder, or ``s3://bucket/prefix``
    on the artifact store's endpoint (``storage.endpoint_url`` / ``GNVC_S3_ENDPOINT_URL``)."""
    if not storage.startswith("s3://"):
        if "://" in storage and not storage.startswith("file://"):
            raise ConfigError(f"--ray-storage {storage!r}: use a directory or s3://bucket/prefix")
        return str(Path(storage.removeprefix("file://")).resolve()), None
    from pyarrow import fs

    s = params.get("storage") or {}
    endpoint = s.get("endpoint_url") or os.environ.get("GNVC_S3_ENDPOINT_URL")
    kwargs: dict[str, Any] = {"region": s.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        scheme, _, host = str(endpoint).partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        kwargs["force_virtual_addressing"] = False
    return storage.removeprefix("s3://").rstrip("/"), fs.S3FileSystem(**kwargs)


def run_distributed(
    name: str,
    params: dict[str, Any],
    *,
    workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    storage: str | None = None,
    max_failures: int = 2,
) -> dict[str, Any]:
    """Train stage ``name`` with ``workers`` Ray Train workers; returns the stage's result (rank 0's).

    Uses the Ray of this process when one is initialised (a Ray job, a flow's task), else
    ``RAY_ADDRESS`` when set, else starts a local one and shuts it down afterwards.
    """
    check_distributable(name, params, workers, gpus_per_worker)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from gnvc.training.common import profile_name

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=True)
        started = True
    try:
        if cpus_per_worker is None:
            cpus_per_worker = max(1.0, float(int(ray.cluster_resources().get("CPU", workers)) // workers))
        storage = storage or f"build/{profile_name(params)}/ray_train"
        storage_path, filesystem = storage_target(storage, params)
        keep = int((params.get(name) or {}).get("keep_checkpoints", 2))
        resources: dict[str, float] = {"CPU": cpus_per_worker}
        if gpus_per_worker:
            resources["GPU"] = gpus_per_worker
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={
                "stage": name,
                "params": params,
                "cwd": os.getcwd(),
                "threads": max(1, int(cpus_per_worker)),
                "use_gpu": gpus_per_worker > 0,
            },
            torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
            ),
            run_config=RunConfig(
                # One Ray run per invocation: a worker group restarted inside it resumes from the last
                # reported checkpoint; a later invocation resumes from run_dir/export_dir as usual.
                name=f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
                storage_path=storage_path,
                storage_filesystem=filesystem,
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=max(2, keep) + 1),
            ),
        )
        try:
            result = trainer.fit()
        except Exception as e:
            raise _user_error(e) from e
        raw = (result.metrics or {}).get("gnvc_result")
        if raw is None:
            raise GnvcError(f"stage {name}: the Ray Train run ended without rank 0's result")
        out = json.loads(raw)
        out["workers"] = workers
        out["ray_run"] = f"{storage}/{Path(result.path).name}" if result.path else storage
        return out
    finally:
        if started:
            ray.shutdown()


def _user_error(e: Exception) -> Exception:
    """A worker's GnvcError as itself (one line, exit code 2); anything else unchanged."""
    for failure in (getattr(e, "worker_failures", None) or {}).values():
        cause = failure
        while cause is not None and not isinstance(cause, GnvcError):
            cause = cause.__cause__
        if isinstance(cause, GnvcError):
            return cause
    return e


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the stage's own ``run`` inside a :class:`WorkerGroup`."""
    import ray.train
    import torch
    from ray.train import Checkpoint

    from gnvc.training.distributed import WorkerGroup

    if os.path.isdir(config["cwd"]):  # Ray starts workers in its own artifacts folder
        os.chdir(config["cwd"])
    torch.set_num_threads(int(config["threads"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    name = config["stage"]
    params = json.loads(json.dumps(config["params"]))  # a private copy
    section = params[name]
    device = None
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        section["device"] = str(device)
    scratch = Path(tempfile.mkdtemp(prefix=f"gnvc-{name}-rank{rank}-"))
    # The section stays as given on every rank: it is the checkpoints' config fingerprint, so a rank
    # with another one would ignore them on resume. Rank 0 alone writes files (Trainer, finish_model).

    def report(path: Path | None, step: int, metrics: dict[str, float]) -> None:
        ckpt = Checkpoint.from_directory(str(path)) if path is not None else None
        ray.train.report({"step": step, **metrics}, checkpoint=ckpt)

    try:
        restored = ray.train.get_checkpoint()
        if restored is None:
            group = WorkerGroup(rank, world, on_checkpoint=report, device=device)
            _run_and_report(name, params, group, scratch, rank)
            return
        with restored.as_directory() as d:
            done = Path(d) / RESULT_FILE
            if done.is_file():  # the group died after the stage had finished: report the result again
                _report_result(json.loads(done.read_text()), scratch, rank)
                return
            group = WorkerGroup(rank, world, on_checkpoint=report, resume_dir=Path(d), device=device)
            _run_and_report(name, params, group, scratch, rank)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_and_report(name: str, params: dict[str, Any], group: Any, scratch: Path, rank: int) -> None:
    from gnvc.stages.runner import stage_module
    from gnvc.training.distributed import joined

    with joined(group):
        result = stage_module(name).run(params)
    result = {**result, "resumed_from": group.start_step or 0}  # > 0: a restarted group resumed
    _report_result(result, scratch, rank)


def _report_result(result: dict[str, Any], scratch: Path, rank: int) -> None:
    """The last report: rank 0's result in a small checkpoint (Ray keeps the metrics of checkpoints)."""
    import ray.train
    from ray.train import Checkpoint

    raw = json.dumps(result, default=str)
    if rank:
        ray.train.report({"gnvc_result": raw})
        return
    done = scratch / "result"
    done.mkdir()
    (done / RESULT_FILE).write_text(raw)
    ray.train.report({"gnvc_result": raw}, checkpoint=Checkpoint.from_directory(str(done)))
