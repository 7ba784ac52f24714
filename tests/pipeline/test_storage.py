"""The artifact store on a local directory and on a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from gnvc.storage import (
    IntegrityError,
    LocalStore,
    ObjectNotFoundError,
    RetryPolicy,
    StorageError,
    open_store,
    store_from_params,
)
from gnvc.storage.s3 import MiB, S3Store

PART = 5 * MiB


def _blob(path: Path, size: int, seed: int = 0) -> str:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


def _s3(server, bucket: str = "gnvc-test", **kw) -> S3Store:
    kw.setdefault("retry", RetryPolicy(attempts=4, deadline_s=20))
    return S3Store(
        f"s3://{bucket}/runs/one",
        endpoint_url=server.endpoint_url,
        part_size=PART,
        multipart_threshold=PART,
        create_bucket=True,
        **kw,
    )


def test_local_store_round_trip_and_corruption(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    digest = _blob(tmp_path / "a.bin", 100_000)
    info = store.put_file(tmp_path / "a.bin", "ckpt/a.bin")
    assert info.sha256 == digest and store.list() == ["ckpt/a.bin"]
    store.get_file("ckpt/a.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "a.bin").read_bytes()
    (tmp_path / "store" / "ckpt" / "a.bin").write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.get_file("ckpt/a.bin", tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(ObjectNotFoundError):
        store.get_file("ckpt/none", tmp_path / "x")
    with pytest.raises(StorageError, match="invalid artifact key"):
        store.put_file(tmp_path / "a.bin", "../escape")


def test_local_store_directories(tmp_path: Path, mini_clips: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_dir(mini_clips.parent, "data/clips/x")
    store.get_dir("data/clips/x", tmp_path / "copy")
    for f in mini_clips.parent.iterdir():
        assert (tmp_path / "copy" / f.name).read_bytes() == f.read_bytes()
    store.delete("data/clips/x/_gnvc_index.json")  # an index-less directory is incomplete
    with pytest.raises(ObjectNotFoundError, match="no complete artifact directory"):
        store.get_dir("data/clips/x", tmp_path / "copy2")


def test_s3_multipart_upload_download_with_checksum(seaweed, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    store = _s3(seaweed, on_progress=lambda done, total: seen.append((done, total)))
    digest = _blob(tmp_path / "model.bin", 2 * PART + 12345)
    info = store.put_file(tmp_path / "model.bin", "models/tiny/model.bin")
    assert seen[-1] == (2 * PART + 12345, 2 * PART + 12345) and len(seen) > 3
    assert info.sha256 == digest and info.size == 2 * PART + 12345
    head = store.client.head_object(Bucket="gnvc-test", Key="runs/one/models/tiny/model.bin")
    assert head["Metadata"]["sha256"] == digest and head["ETag"].strip('"').endswith("-3")  # really multipart
    # The staging object is gone once published; nothing but the artifact is in the bucket.
    assert [o["Key"] for o in store.client.list_objects_v2(Bucket="gnvc-test")["Contents"]] == [
        "runs/one/models/tiny/model.bin"
    ]
    got = store.get_file("models/tiny/model.bin", tmp_path / "back.bin")
    assert got.sha256 == digest
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert store.list("models") == ["models/tiny/model.bin"]
    # A small object goes in one PUT and reads back the same way.
    assert store.get_bytes(store.put_bytes(b"report", "reports/r.txt").key) == b"report"


def test_s3_directory_round_trip_and_params(seaweed, tmp_path: Path, mini_latents: Path) -> None:
    store = store_from_params(
        {"url": "s3://gnvc-dirs/p", "endpoint_url": seaweed.endpoint_url, "create_bucket": True, "part_size_mb": 5,
         "max_concurrency": 2, "retry": {"attempts": 3, "deadline_s": 30, "base_delay_s": 0.2, "max_delay_s": 5}}
    )  # fmt: skip
    # The settings reach boto3's TransferConfig and botocore's retries (older backoff keys are ignored).
    assert isinstance(store, S3Store) and store.retry == RetryPolicy(attempts=3, deadline_s=30)
    assert store.transfer.max_concurrency == 2 and store.transfer.multipart_chunksize == 5 * MiB
    assert store.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    index = store.put_dir(mini_latents.parent, "data/latents/abc")
    assert {f["path"] for f in index["files"]} == {p.name for p in mini_latents.parent.iterdir()}
    store.get_dir("data/latents/abc", tmp_path / "lat")
    for f in mini_latents.parent.iterdir():
        assert (tmp_path / "lat" / f.name).read_bytes() == f.read_bytes()


def test_s3_corrupted_object_is_refused(seaweed, tmp_path: Path) -> None:
    store = _s3(seaweed)
    digest = _blob(tmp_path / "a.bin", 4096)
    store.put_file(tmp_path / "a.bin", "shards/a.bin")
    # Another writer replaces the bytes but keeps the old checksum metadata.
    store.client.put_object(
        Bucket="gnvc-test", Key="runs/one/shards/a.bin", Body=b"x" * 4096, Metadata={"sha256": digest}
    )
    with pytest.raises(IntegrityError, match="corrupted"):
        store.get_file("shards/a.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_s3_server_restarted_mid_upload_is_retried_to_completion(seaweed, tmp_path: Path) -> None:
    digest = _blob(tmp_path / "big.bin", 3 * PART, seed=7)
    restarted = threading.Event()

    killed = threading.Event()

    def outage_after_first_part(done: int, total: int) -> None:
        if done >= PART and not killed.is_set():
            killed.set()
            seaweed.kill()
            threading.Thread(target=lambda: (time.sleep(1.0), seaweed.start(), restarted.set()), daemon=True).start()

    store = _s3(seaweed, retry=RetryPolicy(attempts=30, deadline_s=90), max_concurrency=1,
                on_progress=outage_after_first_part)  # fmt: skip
    info = store.put_file(tmp_path / "big.bin", "models/big.bin")
    assert restarted.is_set() and info.sha256 == digest
    store.get_file("models/big.bin", tmp_path / "back.bin")
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest


def test_s3_bad_credentials_and_unreachable_endpoint(seaweed, tmp_path: Path, monkeypatch) -> None:
    _blob(tmp_path / "a.bin", 10)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    store = S3Store("s3://gnvc-test/x", endpoint_url=seaweed.endpoint_url)
    with pytest.raises(StorageError, match="refused the credentials"):
        store.put_file(tmp_path / "a.bin", "a.bin")
    dead = S3Store(
        "s3://gnvc-test/x",
        endpoint_url="http://127.0.0.1:9",
        retry=RetryPolicy(attempts=2, deadline_s=2),
    )
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9"):
        dead.info("a.bin")
    with pytest.raises(StorageError, match="s3://bucket/prefix"):
        open_store("s3://")
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
