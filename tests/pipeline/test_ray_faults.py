"""A Ray worker SIGKILLed in the middle of a latent shard: the shard is redone, nothing is lost or doubled.

The latents flow fans one ``encode-shard`` task per clip shard out over a real local Ray. The
workers run with a fault point (``gnvc.faults``) at ``shard-tmp-written`` for one shard: the
worker that gets there first has written that shard's Parquet temporary but not renamed it, and
pauses. This test then kills that worker process with a real ``SIGKILL``. Ray sees the worker
die and runs the task again in another worker; the flow completes, and the latent manifest lists
every clip shard exactly once, with hashes that verify, latents equal to an in-process
encoding, and no temporary of the killed attempt left in the output.

Runs only in a loopback-only network namespace (``test_ray_netns.py`` re-runs it there).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gnvc.data.shards import read_latent_shard, read_manifest, verify_shards
from gnvc.faults import ENV_DIR, ENV_POINT, RELEASE, hits, wait_paused

pytestmark = pytest.mark.ray

SHARD = "train-00001.parquet"  # the second of the three train shards of MINI_DATA


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault")


@pytest.fixture(scope="module")
def ray_opts(prefect_harness: Any, fault_dir: Path) -> Iterator[Any]:
    """A fresh local Ray (2 CPU slots) whose workers carry the fault point in their environment."""
    import ray

    from flows.common import RayOptions, ray_task_runner

    opts = RayOptions(
        num_cpus=2,
        num_gpus=0,
        temp_dir=tempfile.mkdtemp(prefix="gnvc-ray-", dir="/tmp"),
        extra_env={ENV_POINT: f"shard-tmp-written:{SHARD}", ENV_DIR: str(fault_dir)},
    )
    ray.init(address="local", **dict(ray_task_runner(opts).init_kwargs))
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    try:
        yield opts
    finally:
        ray.shutdown()


def _kill_when_paused(fault_dir: Path, staging_parent: Path, out: dict[str, Any]) -> None:
    """Wait for the worker to pause mid-shard, note what it left on disk, SIGKILL it."""
    try:
        pid = wait_paused(fault_dir, 600)  # a loaded machine starts Ray workers slowly
        out["partial"] = sorted(p.name for p in staging_parent.glob(f".lat.*/.{SHARD}.*.tmp"))
        out["pid"] = pid
        os.kill(pid, signal.SIGKILL)
    except BaseException as e:  # reported by the test thread
        out["error"] = e
        (fault_dir / RELEASE).touch()  # never leave a worker waiting


def test_worker_killed_mid_shard_is_redone(
    ray_opts: Any, fault_dir: Path, mini_clips: Path, mini_latents: Path, tiny_model_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from flows.common import ray_task_runner
    from flows.latents import latents_flow

    params = {
        "profile": "tiny",
        "latents": {"clips_manifest": str(mini_clips), "vae": str(tiny_model_dir),
                    "out_dir": str(tmp_path / "lat"), "batch_size": 3},
    }  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the flow writes reports/stages/latents.json here
    killed: dict[str, Any] = {}
    killer = threading.Thread(target=_kill_when_paused, args=(fault_dir, tmp_path, killed), daemon=True)
    killer.start()
    state = latents_flow.with_options(task_runner=ray_task_runner(ray_opts))(params=params, return_state=True)
    killer.join(30)
    assert "error" not in killed, killed.get("error")
    assert state.is_completed(), state

    # Two attempts at the shard, in two different worker processes; the first is the one killed,
    # and it was killed mid-shard: its Parquet temporary was on disk, the shard not yet renamed.
    attempts = [pid for _, key, pid in hits(fault_dir) if key == SHARD]
    assert len(attempts) == 2 and attempts[0] == killed["pid"] and attempts[1] != attempts[0], attempts
    assert len(killed["partial"]) == 1, killed
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # really dead

    # The manifest: every clip shard exactly once, in order, hashes verified, the same latents.
    man, ref, clips = read_manifest(tmp_path / "lat"), read_manifest(mini_latents), read_manifest(mini_clips)
    assert [s["path"] for s in man.shards] == [s["path"] for s in clips.shards]
    assert [c["clip_id"] for c in man.clips()] == [c["clip_id"] for c in clips.clips()]
    verify_shards(man)
    for s in ref.shards:
        for a, b in zip(read_latent_shard(man.root / s["path"]), read_latent_shard(ref.root / s["path"]),
                        strict=True):  # fmt: skip
            assert a.clip_sha256 == b.clip_sha256
            np.testing.assert_allclose(a.latents, b.latents, rtol=1e-4, atol=1e-4)
    # Nothing but the listed shards and the manifest: the killed attempt's temporary is gone.
    files = sorted(p.relative_to(man.root).as_posix() for p in man.root.rglob("*") if p.is_file())
    assert files == sorted([*(s["path"] for s in man.shards), "manifest.json"])
    assert not list(tmp_path.glob(".lat.*"))  # no staging directory left behind
    metrics = state.result()
    assert metrics["shards"] == len(clips.shards) and metrics["clips"] == len(clips.clips())
