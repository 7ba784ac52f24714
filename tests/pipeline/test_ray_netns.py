"""Runs the Ray tests (marked ``ray``) in a fresh network namespace that has only loopback.

Ray binds the machine's external address and probes outside hosts; tests here may only talk to
127.0.0.1. When pytest itself runs outside such a namespace (the usual case), this test starts a
child pytest inside one (root needed, as in CI) and fails with its output if any Ray test fails.
Without root it skips (a developer laptop), except under ``GNVC_REQUIRE_RAY_TESTS=1`` (CI), where
not being able to run the Ray tests is a failure.
"""

from __future__ import annotations

import os
import sys

import pytest

from flows.netns import can_isolate, only_loopback, run_isolated

from .conftest import REPO


def test_ray_tests_in_a_loopback_only_namespace() -> None:
    if only_loopback():
        pytest.skip("already isolated: the ray tests run directly in this session")
    if not can_isolate():
        reason = "a loopback-only network namespace needs Linux and root (CI has both)"
        if os.environ.get("GNVC_REQUIRE_RAY_TESTS"):  # set by .ci/run: CI must run the Ray tests
            pytest.fail(reason)
        pytest.skip(reason)
    files = [
        "tests/pipeline/test_flows.py",
        "tests/pipeline/test_flows_runs.py",
        "tests/pipeline/test_ray_head.py",
        "tests/pipeline/test_ray_faults.py",
        "tests/training/test_distributed.py",
        "tests/training/test_fsdp.py",
    ]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "ray", *files]
    proc = run_isolated(cmd, cwd=str(REPO), env=dict(os.environ), timeout=1800)
    tail = proc.stdout[-6000:]
    assert proc.returncode == 0, f"ray tests failed in the isolated namespace:\n{tail}"
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail


def test_a_timed_out_isolated_run_leaves_no_process_behind(tmp_path) -> None:
    """On timeout the whole session goes, grandchildren included (a timed-out Ray test run once
    left its Prefect server running)."""
    import subprocess
    import time

    if not can_isolate():
        pytest.skip("a loopback-only network namespace needs Linux and root")
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        run_isolated(["sh", "-c", script], timeout=2)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the grandchild {pid} outlived the timed-out run")
