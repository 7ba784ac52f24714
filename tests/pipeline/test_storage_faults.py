"""Faults of the S3 artifact store against a real SeaweedFS server, killed with real signals.

- The server SIGKILLed mid-upload (a 40 MB multipart upload, at ~15 MB sent; a directory publish
  at its third file): one clear error, nothing under the final key, and after a restart on the
  same data directory the retried publish completes with the right SHA-256.
- ``python -m gnvc.storage.seaweed`` stopped by SIGTERM, SIGINT or even SIGKILL: its ``weed``
  server does not outlive it.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gnvc.errors import GnvcError
from gnvc.storage import ObjectNotFoundError, RetryPolicy, StorageError
from gnvc.storage.s3 import MiB, S3Store
from gnvc.storage.seaweed import PORT_NAMES, SeaweedS3, _free_port_block

PART = 5 * MiB
KEY = "models/big.bin"


def _blob(path: Path, size: int, seed: int = 0) -> str:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        for i in range(0, size, MiB):
            f.write((block[i % 97 :] + block[: i % 97])[: min(MiB, size - i)])  # no two MiB alike
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _store(server: SeaweedS3, **kw) -> S3Store:
    return S3Store(
        "s3://gnvc-faults/runs/one",
        endpoint_url=server.endpoint_url,
        part_size=PART,
        multipart_threshold=PART,
        max_concurrency=4,
        retry=kw.pop("retry", RetryPolicy(attempts=3, deadline_s=15)),
        create_bucket=True,
        **kw,
    )


def _keys_under(store: S3Store, prefix: str) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_server_killed_mid_upload_then_the_retried_publish_completes(seaweed, tmp_path: Path) -> None:
    size = 40 * MiB
    digest = _blob(tmp_path / "big.bin", size)
    killed_at: list[int] = []

    def kill_at_15mb(done: int, total: int) -> None:
        if done >= 15 * MiB and not killed_at:
            killed_at.append(done)
            seaweed.kill()  # SIGKILL to the server's process group, from boto3's worker thread

    store = _store(seaweed, on_progress=kill_at_15mb)
    t0 = time.monotonic()
    with pytest.raises(GnvcError) as err:
        store.put_file(tmp_path / "big.bin", KEY)
    elapsed = time.monotonic() - t0
    assert killed_at and killed_at[0] < 20 * MiB and elapsed < 60
    msg = str(err.value)
    assert isinstance(err.value, StorageError) and "\n" not in msg
    assert msg.startswith(f"upload {tmp_path / 'big.bin'} to {KEY} (s3://gnvc-faults/runs/one")
    assert "cannot reach the S3 endpoint" in msg or "deadline" in msg, msg
    assert msg.endswith(f"nothing was published under {KEY}")

    seaweed.start()  # the same data directory: whatever the server kept is visible again
    fresh = _store(seaweed)
    assert not fresh.exists(KEY) and fresh.list() == []
    assert _keys_under(fresh, "runs/") == []  # not even a partial object anywhere under the prefix

    info = fresh.put_file(tmp_path / "big.bin", KEY)
    assert info.sha256 == digest and info.size == size
    fresh.get_file(KEY, tmp_path / "back.bin")
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert _keys_under(fresh, "") == [f"runs/one/{KEY}"]  # the staging object is gone
    seaweed.stop(timeout_s=5)  # weed restarted after a SIGKILL can hang ~20 s in a graceful stop


def test_server_killed_mid_directory_publish_then_it_resumes(seaweed, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    sizes = [6 * MiB + 1000 * i for i in range(5)]  # distinct: the progress hook knows which file it is
    for i, n in enumerate(sizes):
        _blob(src / f"part{i}.bin", n, seed=i)
    (src / "config.json").write_text('{"profile": "tiny"}')

    def kill_in_third_file(done: int, total: int) -> None:
        if total == sizes[2] and done >= total // 2 and seaweed.proc is not None:
            seaweed.kill()

    store = _store(seaweed, on_progress=kill_in_third_file)
    with pytest.raises(StorageError, match="nothing was published under models/m/part2.bin"):
        store.put_dir(src, "models/m")

    seaweed.start()
    seen: list[int] = []
    fresh = _store(seaweed, on_progress=lambda done, total: seen.append(total))
    with pytest.raises(ObjectNotFoundError, match="no complete artifact directory"):
        fresh.get_dir("models/m", tmp_path / "early")  # no index: never read as a model
    assert not (tmp_path / "early").exists()
    # config.json sorts first; part0 and part1 were published whole before the kill, part2 not.
    assert fresh.list("models/m") == ["models/m/config.json", "models/m/part0.bin", "models/m/part1.bin"]

    index = fresh.put_dir(src, "models/m")  # the retry uploads only what is missing
    assert set(seen) & set(sizes) == set(sizes[2:])
    assert len(index["files"]) == 6
    fresh.get_dir("models/m", tmp_path / "back")
    for f in src.iterdir():
        assert (tmp_path / "back" / f.name).read_bytes() == f.read_bytes(), f.name
    seaweed.stop(timeout_s=5)


def _gone(pid: int) -> bool:
    """True once ``pid`` is not running (absent, or a zombie waiting for init to reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_seaweed_command_stops_its_server_on_a_signal(tmp_path: Path, sig: signal.Signals, monkeypatch) -> None:
    base = _free_port_block(len(PORT_NAMES))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "gnvc.storage.seaweed", "--dir", str(tmp_path / "s3"), "--port", str(base)]
    wrapper = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in wrapper.stdout], daemon=True).start()
    weed_pid = None
    try:
        deadline = time.monotonic() + 90
        while weed_pid is None and time.monotonic() < deadline:
            line = lines.get(timeout=deadline - time.monotonic())
            if "weed pid " in line:
                weed_pid = int(line.split("weed pid ")[1].split(",")[0])
        assert weed_pid is not None and not _gone(weed_pid)
        server = SeaweedS3(tmp_path / "s3", base_port=base)  # a client's view of the same server
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        probe = S3Store("s3://gnvc-probe", endpoint_url=server.endpoint_url, retry=RetryPolicy(1, 5))
        probe.ensure_bucket()  # it really serves S3

        wrapper.send_signal(sig)
        assert wrapper.wait(60) == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
        deadline = time.monotonic() + 30
        while not _gone(weed_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _gone(weed_pid), f"weed (pid {weed_pid}) outlived its wrapper after {sig.name}"
        with pytest.raises(StorageError, match="cannot reach the S3 endpoint"):
            probe.list()
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(10)
        if weed_pid is not None and not _gone(weed_pid):
            os.kill(weed_pid, signal.SIGKILL)  # our own child's child: never leave it running
