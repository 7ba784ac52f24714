"""What every flow shares: offline settings, one Prefect server for all Ray workers, the Ray runner.

Measured on this project's machines (shared/ENVIRONMENT.md), each rule below avoids a real failure:
- With no ``PREFECT_API_URL``, every Ray worker starts its *own* ephemeral Prefect server on one
  SQLite file (8 tasks: 37 s instead of 8.5 s). So the driver makes sure there is exactly one
  server — the configured one, the test harness's, or one it starts on 127.0.0.1 with a random
  auth token (:func:`prefect_api`) — and hands its URL and token to every worker.
- ``RayTaskRunner(address=None)`` silently attaches to whatever local cluster runs; ``"local"``
  forces a fresh one, in a temp dir of our own, with the dashboard and usage stats off.
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
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

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
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: token}):
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


def ray_task_runner(opts: RayOptions) -> Any:
    """A :class:`prefect_ray.RayTaskRunner` configured as :class:`RayOptions` says."""
    from prefect_ray import RayTaskRunner

    runtime_env: dict[str, Any] = {"env_vars": worker_env(opts)}
    if opts.working_dir:
        runtime_env["working_dir"] = opts.working_dir
        runtime_env["excludes"] = [".git", ".venv", "data", "build", "models", "reports", "artifacts", ".dvc/cache"]
    init_kwargs: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": True}
    if opts.address == "local":
        init_kwargs["include_dashboard"] = False
        if opts.num_cpus is not None:
            init_kwargs["num_cpus"] = opts.num_cpus
        if opts.num_gpus is not None:
            init_kwargs["num_gpus"] = opts.num_gpus
        # Unix socket paths must stay short: a short private dir, never a stale shared one.
        init_kwargs["_temp_dir"] = opts.temp_dir or tempfile.mkdtemp(prefix="gnvc-ray-", dir="/tmp")
    return RayTaskRunner(address=opts.address, init_kwargs=init_kwargs)


def shutdown_ray() -> None:
    """Stop the Ray this process started (prefect-ray leaves a local cluster running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


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
