"""Run a command in a fresh network namespace that has only loopback (Linux, root).

Why: Ray picks the machine's external address as its node IP, listens on 0.0.0.0 and probes the
cloud metadata address even with usage stats off (shared/ENVIRONMENT.md). Tests and benchmarks
here may only talk to 127.0.0.1, so anything that starts Ray runs in a namespace where loopback
is the only interface: Ray falls back to 127.0.0.1 and every outside probe fails at once.
Implemented with ``unshare(CLONE_NEWNET)`` and an ``ioctl`` that brings ``lo`` up, so neither
util-linux's ``unshare`` nor iproute2's ``ip`` is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def only_loopback() -> bool:
    """True when this process's network namespace has no interface but ``lo``."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def _bring_lo_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def enter_loopback_namespace() -> None:
    """Move this process into a new network namespace and bring its loopback up (needs root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET) failed: {os.strerror(err)} (needs root or CAP_SYS_ADMIN)")
    _bring_lo_up()


def can_isolate() -> bool:
    """Whether :func:`run_isolated` can work here (Linux, root)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0


def run_isolated(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a new loopback-only network namespace; returns its completed process (output captured).

    The command runs in its own session: on ``timeout`` the whole process group is killed, not
    only ``cmd`` (a timed-out test run would otherwise leave its Ray workers and Prefect server
    running, holding CPU and ports)."""
    if not can_isolate():
        raise OSError("a loopback-only network namespace needs Linux and root")
    proc = subprocess.Popen(
        list(cmd),
        env=env,
        cwd=cwd,
        preexec_fn=enter_loopback_namespace,  # noqa: PLW1509 - runs before exec, single-threaded child
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException as e:  # a timeout, or the caller interrupted: nothing of the run survives
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(proc.args, timeout or 0, output=out) from None
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


if __name__ == "__main__":
    # python -m flows.netns CMD ...: run CMD isolated (e.g. a benchmark that starts Ray).
    if len(sys.argv) < 2:
        sys.exit("usage: python -m flows.netns CMD [ARGS...]")
    enter_loopback_namespace()
    os.execvp(sys.argv[1], sys.argv[1:])
