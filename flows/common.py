"""What every flow shares: offline settings, one Prefect server for all Ray workers, the Ray runner.

Measured on this project's machines (shared/ENVIRONMENT.md), each rule below avoids a real failure:
- With no ``PREFECT_API_URL``, every Ray worker starts its *own* ephemeral Prefect server on one
  SQLite file (8 tasks: 37 s instead of 8.5 s). So the driver makes sure there is exactly one
  server — the configured one, the test harness's, or one it starts on 127.0.0.1 with a random
  auth token (:func:`prefect_api`) — and hands its URL and token to every worker.
- ``RayTaskRunner(address=None)`` silently attaches to whatever local cluster runs; ``"local"``
  forces a fresh one, in a temp dir of our own, with the dashboard and usage stats off.
- A task asking for more than any node has (``--task-gpus 1`` on a CPU-only cluster) stays
  PENDING forever: :func:`run_flow_on_ray` connects first and refuses such requests before a
  single task is submitted (:func:`check_resources`).
- A Prefect server this process starts is gone when the run ends, so its "View at http://…"
  links would be dead: for such a server ``PREFECT_UI_URL`` is set empty and none is printed.
- Analytics and telemetry are off everywhere (Prefect, Ray, DVC, boto3's metadata probe).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnvc.errors import GnvcError

REPO_ROOT = Path(__file__).resolve().parents[1]

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Never shipped to a remote cluster with the code (data, weights and outputs live on shared storage).
WORKING_DIR_EXCLUDES = (".git", ".venv", "data", "build", "models", "reports", "artifacts", "checkpoints", ".dvc/cache")
REPORT_RUNS_DIR = "reports/runs"  # a flow run's evaluation report: reports/runs/<run id>/

# Passed on to Ray workers when set in the driver (credentials and endpoints included: a worker
# that publishes to S3 needs the same ones).
PROPAGATED_ENV = (
    *OFFLINE_ENV,
    "GNVC_NUM_THREADS",
    "GNVC_STORE_URL",
    "GNVC_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "PREFECT_HOME",
    "RAY_AUTH_MODE",
)


def apply_offline_env() -> None:
    """Set the offline defaults (before Prefect/Ray read their settings; explicit values win)."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


apply_offline_env()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def current_api() -> tuple[str | None, str | None]:
    """The Prefect API URL and auth string of the current settings context (None: ephemeral)."""
    from prefect.settings import get_current_settings

    s = get_current_settings()
    url = s.api.url
    auth = s.api.auth_string.get_secret_value() if s.api.auth_string else None
    return url, auth


@contextlib.contextmanager
def prefect_api(timeout_s: float = 120.0) -> Iterator[str]:
    """Make sure one Prefect API serves this process and its workers; yield its URL.

    Uses ``PREFECT_API_URL`` when configured (a team server, or the test harness); otherwise starts
    ``prefect server start`` on 127.0.0.1 with a random API auth token (basic auth
    ``PREFECT_SERVER_API_AUTH_STRING``/``PREFECT_API_AUTH_STRING``) and stops it afterwards.
    """
    url, _ = current_api()
    if url:
        yield url
        return
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    port = _free_port()
    token = f"gnvc:{secrets.token_urlsafe(24)}"
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    env = {
        **os.environ,
        "PREFECT_SERVER_API_AUTH_STRING": token,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = tempfile.NamedTemporaryFile(prefix="gnvc-prefect-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--analytics-off",
        "--no-ui",
    ]
    if not Path(cmd[0]).exists():
        cmd[0] = shutil.which("prefect") or "prefect"
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_http(f"{url}/health", timeout_s, proc, log.name)
        # An empty UI URL: no "View at http://127.0.0.1:…" links to a server that stops with this run.
        updates = {PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: token, PREFECT_UI_URL: ""}
        with temporary_settings(updates=updates):
            yield url
    finally:
        drain_prefect_clients()
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        log.close()


def drain_prefect_clients(timeout_s: float = 10.0) -> None:
    """Flush Prefect's background log and event senders (before their server goes away)."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout_s)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout_s)


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: str) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - 127.0.0.1 only
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Prefect server did not answer at {url} within {timeout_s} s; see {log}")


@dataclass
class RayOptions:
    """How the flows use Ray. ``address``: ``local`` (a fresh local cluster, the default), ``auto``
    (the cluster this machine is part of) or ``ray://head:10001`` (Ray Client)."""

    address: str = "local"
    num_cpus: int | None = None  # a local cluster's CPU slots (None: all cores)
    num_gpus: float | None = None  # a local cluster's GPUs (None: detected)
    task_cpus: float = 1.0  # CPU slots per fan-out task (one per shard / evaluation job)
    task_gpus: float = 0.0  # GPUs per fan-out task
    train_gpus: float = 0.0  # GPUs per training-stage task (vae, prior, stage1, stage2)
    threads_per_task: int = 1  # torch threads in each worker (GNVC_NUM_THREADS)
    working_dir: str | None = None  # ship this directory to a remote cluster (runtime_env)
    temp_dir: str | None = None
    resource_wait_s: float = 0.0  # how long an autoscaling cluster may take to add a node that fits
    extra_env: dict[str, str] = field(default_factory=dict)


def worker_env(opts: RayOptions) -> dict[str, str]:
    """Environment of every Ray worker: offline settings, credentials, the one Prefect API, code path."""
    env = {k: os.environ[k] for k in PROPAGATED_ENV if k in os.environ}
    env["GNVC_NUM_THREADS"] = str(opts.threads_per_task)
    url, auth = current_api()
    if url:
        env["PREFECT_API_URL"] = url
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    if not opts.working_dir:
        paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(opts.extra_env)
    return env


def ray_init_kwargs(opts: RayOptions) -> dict[str, Any]:
    """``ray.init`` keyword arguments for :class:`RayOptions` (the task runner's, and :func:`connect_ray`'s)."""
    runtime_env: dict[str, Any] = {"env_vars": worker_env(opts)}
    if opts.working_dir:
        runtime_env["working_dir"] = opts.working_dir
        runtime_env["excludes"] = list(WORKING_DIR_EXCLUDES)
    init_kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": True}
    if opts.address == "local":
        init_kwargs["include_dashboard"] = False
        if opts.num_cpus is not None:
            init_kwargs["num_cpus"] = opts.num_cpus
        if opts.num_gpus is not None:
            init_kwargs["num_gpus"] = opts.num_gpus
        # Unix socket paths must stay short: a short private dir, never a stale shared one.
        init_kwargs["_temp_dir"] = opts.temp_dir or tempfile.mkdtemp(prefix="gnvc-ray-", dir="/tmp")
    return init_kwargs


def ray_task_runner(opts: RayOptions) -> Any:
    """A :class:`prefect_ray.RayTaskRunner` configured as :class:`RayOptions` says (it reuses a
    Ray this process already connected, e.g. by :func:`connect_ray`)."""
    from prefect_ray import RayTaskRunner

    return RayTaskRunner(address=opts.address, init_kwargs=ray_init_kwargs(opts))


def connect_ray(opts: RayOptions) -> bool:
    """Start or join the Ray of ``opts`` unless this process is connected already; True if it connected."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(address=opts.address, **ray_init_kwargs(opts))
    return True


def shutdown_ray() -> None:
    """Stop the Ray this process started (prefect-ray leaves a local cluster running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


class ClusterResourceError(GnvcError):
    """Tasks ask for more CPUs or GPUs than any node of the Ray cluster has (they would wait forever)."""


@dataclass(frozen=True)
class TaskRequest:
    """What one kind of task asks Ray for; ``what`` names it and the options that set it."""

    what: str
    cpus: float
    gpus: float = 0.0

    def fits(self, node: dict[str, float]) -> bool:
        return node.get("CPU", 0.0) >= self.cpus and node.get("GPU", 0.0) >= self.gpus

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


def alive_nodes() -> list[dict[str, float]]:
    """Total resources of every live node of the connected Ray cluster."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def unmet(requests: Iterable[TaskRequest], nodes: list[dict[str, float]]) -> list[TaskRequest]:
    """The requests no single node can satisfy (a Ray task runs on one node)."""
    return [r for r in requests if not any(r.fits(n) for n in nodes)]


def check_resources(requests: Iterable[TaskRequest], *, wait_s: float = 0.0, poll_s: float = 2.0) -> None:
    """Refuse task requests the connected cluster cannot run, before any task is submitted.

    With ``wait_s`` > 0 (an autoscaling cluster whose GPU nodes start on demand), ask the autoscaler
    for the missing bundles and wait that long for a node that fits; then refuse.
    """
    requests = list(requests)
    missing = unmet(requests, alive_nodes())
    if missing and wait_s > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[r.bundle() for r in missing])
        deadline = time.monotonic() + wait_s
        try:
            while missing and time.monotonic() < deadline:
                time.sleep(poll_s)
                missing = unmet(missing, alive_nodes())
        finally:
            request_resources(bundles=[])  # the tasks themselves now keep the nodes busy
    if missing:
        nodes = alive_nodes()
        biggest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        asks = "; ".join(f"{r.what} asks for {r.cpus:g} CPU, {r.gpus:g} GPU" for r in missing)
        waited = f" (waited {wait_s:g} s)" if wait_s > 0 else " (--resource-wait SECONDS for an autoscaling cluster)"
        raise ClusterResourceError(
            f"no node of the Ray cluster can run the tasks: {asks}; the largest of {len(nodes)} node(s) has "
            f"{biggest.get('CPU', 0.0):g} CPU, {biggest.get('GPU', 0.0):g} GPU{waited}"
        )


def run_flow_on_ray(flow: Any, opts: RayOptions, requests: Iterable[TaskRequest], **parameters: Any) -> Any:
    """Run a Prefect ``flow`` on Ray, the way every flow here runs.

    One Prefect API for the driver and every worker (:func:`prefect_api`), Ray connected first so
    impossible requests are refused before any task is submitted (:func:`check_resources`), the
    flow on a :func:`ray_task_runner`, and the Ray this call connected shut down afterwards.
    """
    with prefect_api():
        connected = connect_ray(opts)
        try:
            check_resources(requests, wait_s=opts.resource_wait_s)
            return flow.with_options(task_runner=ray_task_runner(opts))(**parameters)
        finally:
            if connected:
                shutdown_ray()


def new_run_id() -> str:
    """An id for this flow run's outputs: UTC time (sorts by start) and the Prefect flow run id's head."""
    import uuid

    from prefect.runtime import flow_run

    run = str(flow_run.get_id() or uuid.uuid4())
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run[:8]}"


def ray_map(
    task: Any, fn: Callable[[Any], Any], items: Iterable[Any], *, cpus: float = 1.0, gpus: float = 0.0
) -> list[Any]:
    """``map(fn, items)`` with one Prefect task per item on the flow's task runner (Ray), in order.

    This is the ``map_fn`` the evaluation takes: the same jobs, spread over the cluster, with the
    task's retries; results come back in the order of ``items``.
    """
    from prefect.utilities.annotations import unmapped
    from prefect_ray.context import remote_options

    items = list(items)
    if not items:
        return []
    options: dict[str, Any] = {"num_cpus": cpus}
    if gpus:
        options["num_gpus"] = gpus
    with remote_options(**options):
        futures = task.map(unmapped(fn), items)
    return [f.result() for f in futures]
