"""Run one pipeline stage by name: load params, call ``gnvc.stages.<name>.run``, record its metrics.

Why one runner: ``gnvc stage NAME`` (what ``dvc.yaml`` calls), the Prefect flows and
``infra/ray/train_job.py`` must behave the same — same params loading, same thread settings,
same metrics file. Every run writes ``reports/stages/<name>.json``: the stage's scalar metrics
plus its wall time, the file ``dvc metrics show`` reads for every stage (and the benchmark that
times the tiny pipeline).
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from gnvc.errors import ConfigError
from gnvc.stages import STAGES

DEFAULT_METRICS_DIR = Path("reports/stages")
TRAINING_STAGES = ("vae", "prior", "stage1", "stage2")  # the stages `workers > 1` applies to


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as a dict, with a message that names the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameter file not found (run from the repository root or pass --params)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return params


def stage_module(name: str) -> Any:
    if name not in STAGES:
        raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    try:
        return importlib.import_module(f"gnvc.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"gnvc.stages.{name}":
            raise ConfigError(f"stage {name!r} is not implemented in this gnvc (no gnvc/stages/{name}.py)") from None
        raise


def flatten_metrics(result: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → ``a.b`` keys; keep numbers, booleans and short strings (what ``dvc metrics`` shows)."""
    out: dict[str, Any] = {}
    if not isinstance(result, dict):
        return out
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(value)):
            out[name] = value if not isinstance(value, str) else value[:200]
    return out


def configure_threads() -> None:
    """``GNVC_NUM_THREADS`` caps torch's intra-op threads (shared machines, one Ray task per core)."""
    n = os.environ.get("GNVC_NUM_THREADS")
    if n:
        import torch

        torch.set_num_threads(max(1, int(n)))


def run_stage(
    name: str,
    params: dict[str, Any],
    *,
    metrics_dir: str | Path | None = DEFAULT_METRICS_DIR,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    ray_storage: str | None = None,
    max_failures: int = 2,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run stage ``name`` with ``params``; extra keyword arguments (e.g. ``map_fn`` for evaluate) are
    passed on when the stage's ``run`` accepts them. Returns the stage's metrics plus ``wall_s``.

    ``workers > 1`` trains a training stage data-parallel on Ray Train (:mod:`gnvc.training.ray_train`:
    ``gpus_per_worker`` and ``cpus_per_worker`` each, checkpoints in ``ray_storage``, ``max_failures``
    worker-group restarts); ``workers == 1`` runs it in this process and never imports Ray.
    """
    module = stage_module(name)
    if workers != 1 or gpus_per_worker:
        from gnvc.training.ray_train import check_distributable, run_distributed

        check_distributable(name, params, workers, gpus_per_worker)  # before Ray starts
        t0 = time.perf_counter()
        result = run_distributed(
            name, params, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
            storage=ray_storage, max_failures=max_failures,
        )  # fmt: skip
        return record_metrics(name, result, time.perf_counter() - t0, metrics_dir)
    configure_threads()
    accepted = inspect.signature(module.run).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    extra = {k: v for k, v in kwargs.items() if takes_any or k in accepted}
    t0 = time.perf_counter()
    result = module.run(params, **extra)
    if name in TRAINING_STAGES and isinstance(result, dict):
        result = {**result, "workers": 1}  # the world size, as a multi-worker run records it
    return record_metrics(name, result, time.perf_counter() - t0, metrics_dir)


def record_metrics(
    name: str, result: Any, wall_s: float, metrics_dir: str | Path | None = DEFAULT_METRICS_DIR
) -> dict[str, Any]:
    """Flatten a stage's result, add its wall time, write ``<metrics_dir>/<name>.json`` atomically."""
    metrics = {"stage": name, **flatten_metrics(result), "wall_s": round(wall_s, 3)}
    if metrics_dir is not None:
        out = Path(metrics_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{name}.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, out / f"{name}.json")
    return metrics
