"""Command line of ``python -m flows.pipeline|latents|evaluate``: every argument checked before Prefect or Ray.

Why this module imports neither: Prefect takes seconds to import and the flows then start a Prefect
server and a Ray cluster; a typo in ``--stages`` used to surface 15 s later as a 58-line
traceback. Here every argument that can be checked without a cluster is checked first (stage
names, resource amounts Ray would reject or never satisfy, the Ray address, the parameter file,
``--set`` items, the store URL) and a mistake ends the run with one ``error:`` line and exit
status 2 in a fraction of a second. What needs the cluster (does any node have the GPUs asked
for?) is checked right after connecting, before any task is submitted
(:func:`flows.common.check_resources`).

Each flow has the shared options plus its own (:data:`FLOW_OPTIONS`); adding a pass-through
option to one flow is one :func:`_option` line there and one keyword in :func:`_run`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from gnvc.errors import GnvcError
from gnvc.stages import STAGES

FLOWS = ("pipeline", "latents", "evaluate")
TRAINING_STAGES = ("vae", "prior", "stage1", "stage2")
FAN_OUT_STAGES = ("latents", "evaluate")
_RAY_ADDRESS = re.compile(r"^(local|auto|ray://[^\s:/]+:\d{1,5}|[^\s:/]+:\d{1,5})$")


class UsageError(GnvcError):
    """A command-line argument that cannot work (reported as one ``error:`` line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _number(kind: type, *, low: float, low_open: bool = False, whole_above_one: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` ≥ ``low`` (> ``low`` when ``low_open``); with
    ``whole_above_one``, amounts above 1 must be whole (Ray's rule for fractional resources)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>' if low_open else '≥'} {low:g}")
        if whole_above_one and value > 1 and value != int(value):
            raise argparse.ArgumentTypeError(f"{text!r}: Ray takes fractions only below 1 (0.5) or whole amounts (2)")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


CPUS = _number(float, low=0, low_open=True, whole_above_one=True)
GPUS = _number(float, low=0, whole_above_one=True)
COUNT = _number(int, low=1)
SECONDS = _number(float, low=0)


def _option(ap: argparse.ArgumentParser, *names: str, **kw: Any) -> None:
    ap.add_argument(*names, **kw)


def _shared_options(ap: argparse.ArgumentParser) -> None:
    _option(ap, "--params", default="params.yaml", help="parameter file (default: params.yaml)")
    _option(ap, "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="override a parameter (VALUE is YAML); repeatable")  # fmt: skip
    _option(ap, "--ray-address", default="local",
            help="'local' (a fresh local Ray, default), 'auto' (this node's cluster) or ray://HOST:10001")  # fmt: skip
    _option(ap, "--ray-working-dir", default=None, help="ship this directory to a remote cluster")
    _option(ap, "--num-cpus", type=COUNT, default=None, help="CPU slots of a local Ray (default: all cores)")
    _option(ap, "--num-gpus", type=GPUS, default=None, help="GPUs of a local Ray (default: detected)")
    _option(ap, "--task-cpus", type=CPUS, default=1.0, help="CPUs per fan-out task (default 1)")
    _option(ap, "--task-gpus", type=GPUS, default=0.0, help="GPUs per fan-out task (default 0)")
    _option(ap, "--threads-per-task", type=COUNT, default=1, help="torch threads per fan-out task (default 1)")
    _option(ap, "--resource-wait", type=SECONDS, default=0.0, metavar="SECONDS",
            help="how long to wait for an autoscaling cluster to add a node that fits the tasks (default 0: "
                 "refuse at once when no node can run them)")  # fmt: skip
    _option(ap, "--store", default=None, help="artifact store URL (overrides storage.url)")


def _pipeline_options(ap: argparse.ArgumentParser) -> None:
    _option(ap, "--stages", default="all", help=f"comma-separated stages or 'all' (default); of {','.join(STAGES)}")
    _option(ap, "--train-gpus", type=GPUS, default=0.0, help="GPUs per training-stage task (default 0)")
    _option(ap, "--train-cpus", type=CPUS, default=None, help="CPUs per training-stage task (default: all)")
    _option(ap, "--train-workers", type=COUNT, default=1,
            help="data-parallel Ray Train workers per training stage, each with --train-cpus/--train-gpus "
                 "(default 1: one task)")  # fmt: skip
    _option(ap, "--publish", action="store_true", help="publish data, model and report to the artifact store")


def _evaluate_options(ap: argparse.ArgumentParser) -> None:
    _option(ap, "--publish", action="store_true", help="publish the run's report to the artifact store")


FLOW_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "pipeline": _pipeline_options,
    "latents": lambda ap: None,
    "evaluate": _evaluate_options,
}
DESCRIPTIONS = {
    "pipeline": "Run gnvc pipeline stages as one Prefect flow on Ray.",
    "latents": "VAE-encode the clip shards as a Prefect flow: one Ray task per shard.",
    "evaluate": "Evaluate models/<profile> as a Prefect flow: one Ray task per job; the report goes to "
    "reports/runs/<run id>/.",
}


def build_parser(flow: str) -> argparse.ArgumentParser:
    ap = _Parser(prog=f"python -m flows.{flow}", description=DESCRIPTIONS[flow])
    _shared_options(ap)
    FLOW_OPTIONS[flow](ap)
    return ap


def parse_stages(text: str) -> list[str]:
    """``all`` or comma-separated stage names → the stages in ``dvc.yaml``'s order; a mistake → UsageError."""
    names = [s.strip() for s in text.split(",")]
    if names == ["all"]:
        return list(STAGES)
    if any(not n for n in names):
        raise UsageError(f"--stages {text!r}: empty stage name (give e.g. prepare,latents or all)")
    for n in names:
        if n == "all":
            raise UsageError(f"--stages {text!r}: 'all' cannot be combined with other stages")
        if n not in STAGES:
            close = difflib.get_close_matches(n, STAGES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--stages: unknown stage {n!r}{hint}; stages: {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def validate(flow: str, a: argparse.Namespace) -> dict[str, Any]:
    """Every check that needs no cluster; returns the loaded parameters (``--set`` applied)."""
    from gnvc.cli.stage import apply_overrides
    from gnvc.stages.runner import load_params

    if flow == "pipeline":
        a.stages = parse_stages(a.stages)
    if not _RAY_ADDRESS.match(a.ray_address):
        raise UsageError(f"--ray-address {a.ray_address!r}: expected local, auto, ray://HOST:PORT or HOST:PORT")
    local = a.ray_address == "local"
    if not local and (a.num_cpus is not None or a.num_gpus is not None):
        raise UsageError("--num-cpus/--num-gpus size a local Ray; an existing cluster has its own resources")
    if local and a.ray_working_dir:
        raise UsageError("--ray-working-dir ships code to a remote cluster; a local Ray uses this checkout")
    if a.ray_working_dir and not Path(a.ray_working_dir).is_dir():
        raise UsageError(f"--ray-working-dir {a.ray_working_dir}: not a directory")
    if flow == "pipeline" and a.train_workers > 1 and a.train_gpus > 1:
        raise UsageError("--train-gpus is per Ray Train worker and at most 1 (a worker trains on one device)")
    requests = [("--task-cpus", a.task_cpus, "--task-gpus", a.task_gpus)]
    if flow == "pipeline" and any(s in TRAINING_STAGES for s in a.stages):
        requests.append(("--train-cpus", a.train_cpus, "--train-gpus", a.train_gpus))
    for cpu_flag, cpus, gpu_flag, gpus in requests:
        if local and a.num_cpus is not None and cpus is not None and cpus > a.num_cpus:
            raise UsageError(f"{cpu_flag} {cpus:g} > --num-cpus {a.num_cpus}: no task could ever start")
        if local and a.num_gpus is not None and gpus > a.num_gpus:
            raise UsageError(f"{gpu_flag} {gpus:g} > --num-gpus {a.num_gpus:g}: no task could ever start")
    if a.store is not None:
        if not a.store.strip():
            raise UsageError("--store: empty URL (a directory or s3://bucket/prefix)")
        if "://" in a.store and not a.store.startswith(("s3://", "file://")):
            raise UsageError(f"--store {a.store!r}: unsupported URL (a directory or s3://bucket/prefix)")
        if a.store.startswith("s3://") and not a.store[5:].split("/")[0]:
            raise UsageError(f"--store {a.store!r}: no bucket name")
    params = apply_overrides(load_params(a.params), tuple(a.overrides))
    if a.store:
        params.setdefault("storage", {})["url"] = a.store
    if flow == "pipeline" and a.train_workers > 1:  # an unsplittable batch, refused before any cluster
        from gnvc.training.ray_train import check_distributable

        for name in (s for s in a.stages if s in TRAINING_STAGES):
            check_distributable(name, params, a.train_workers, a.train_gpus)
    return params


def _run(flow: str, a: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """Import the flow (Prefect, Ray) only now, and run it."""
    from flows.common import RayOptions

    opts = RayOptions(
        address=a.ray_address,
        num_cpus=a.num_cpus,
        num_gpus=a.num_gpus,
        task_cpus=a.task_cpus,
        task_gpus=a.task_gpus,
        train_gpus=getattr(a, "train_gpus", 0.0),
        threads_per_task=a.threads_per_task,
        working_dir=a.ray_working_dir,
        resource_wait_s=a.resource_wait,
    )
    if flow == "pipeline":
        from flows.pipeline import run_pipeline

        return run_pipeline(
            params, a.stages, opts, train_cpus=a.train_cpus, publish=a.publish, train_workers=a.train_workers
        )
    if flow == "latents":
        from flows.latents import run_latents

        return run_latents(params, opts)
    from flows.evaluate import run_evaluate

    return run_evaluate(params, opts, publish=a.publish)


def main(flow: str, argv: list[str] | None = None) -> int:
    """``python -m flows.<flow>``: validate, run, print the flow's metrics as JSON; 2 on a user error."""
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}")
    a = build_parser(flow).parse_args(argv)
    try:
        params = validate(flow, a)
        result = _run(flow, a, params)
    except GnvcError as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(json.dumps(result, indent=2, default=str))
    return 0
