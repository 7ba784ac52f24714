"""Command line shared by ``python -m flows.pipeline|latents|evaluate``."""

from __future__ import annotations

import argparse
import json
import sys

from flows.common import RayOptions
from gnvc.errors import GnvcError
from gnvc.stages import STAGES


def parse_args(argv: list[str] | None, default_stages: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Run gnvc pipeline stages as a Prefect flow on Ray.")
    ap.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter (VALUE is YAML); repeatable",
    )
    ap.add_argument(
        "--stages",
        default=default_stages,
        help=f"comma-separated stages or 'all' (default: {default_stages}); of {','.join(STAGES)}",
    )
    ap.add_argument(
        "--ray-address",
        default="local",
        help="'local' (fresh local Ray, default), 'auto' (this node's cluster) or ray://HOST:10001",
    )
    ap.add_argument("--ray-working-dir", default=None, help="ship this directory to a remote cluster")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPU slots of a local Ray (default: all cores)")
    ap.add_argument("--num-gpus", type=float, default=None, help="GPUs of a local Ray (default: detected)")
    ap.add_argument("--task-cpus", type=float, default=1.0, help="CPUs per fan-out task (default 1)")
    ap.add_argument("--task-gpus", type=float, default=0.0, help="GPUs per fan-out task (default 0)")
    ap.add_argument("--train-gpus", type=float, default=0.0, help="GPUs per training-stage task (default 0)")
    ap.add_argument("--train-cpus", type=float, default=None, help="CPUs per training-stage task (default: all)")
    ap.add_argument("--threads-per-task", type=int, default=1, help="torch threads per fan-out task (default 1)")
    ap.add_argument("--publish", action="store_true", help="publish data, model and report to the artifact store")
    ap.add_argument("--store", default=None, help="artifact store URL (overrides storage.url)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None, default_stages: str = "all") -> None:
    from pathlib import Path

    from gnvc.cli.stage import load_params_with

    a = parse_args(argv, default_stages)
    try:
        params = load_params_with(Path(a.params), tuple(a.overrides))
        if a.store:
            params.setdefault("storage", {})["url"] = a.store
        stages = list(STAGES) if a.stages == "all" else [s.strip() for s in a.stages.split(",") if s.strip()]
        opts = RayOptions(
            address=a.ray_address,
            num_cpus=a.num_cpus,
            num_gpus=a.num_gpus,
            task_cpus=a.task_cpus,
            task_gpus=a.task_gpus,
            train_gpus=a.train_gpus,
            threads_per_task=a.threads_per_task,
            working_dir=a.ray_working_dir,
        )
        from flows.pipeline import run_pipeline

        result = run_pipeline(params, stages, opts, train_cpus=a.train_cpus, publish=a.publish)
    except GnvcError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, indent=2, default=str))
