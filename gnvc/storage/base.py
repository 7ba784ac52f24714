"""The artifact-store interface: one way to publish and fetch shards, checkpoints and reports.

Guarantees every backend keeps (and the tests check on a real S3 server):
- **Checksums verified on read.** Every object is stored with the SHA-256 of its bytes; a read
  recomputes it and raises :class:`IntegrityError` on a mismatch, so a corrupted or truncated
  download never reaches a training run. The local file appears only after the check passes.
- **Atomic publish.** An object is visible under its final key only once it is complete and
  checked (a temporary name then a rename locally; a staging key then a server-side copy on S3). A
  directory is published file by file, then an index (``_gnvc_index.json``) listing every file
  with its hash is written *last*: a directory without its index is incomplete and is never read.
- **Retries with backoff** on transient failures (connection refused/reset, timeouts, 5xx,
  throttling): exponential, jittered, bounded in attempts and total time (:class:`RetryPolicy`);
  when they run out the error says what failed, where, and that nothing was published under the key.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gnvc.errors import GnvcError

INDEX_NAME = "_gnvc_index.json"


class StorageError(GnvcError):
    """The artifact store cannot be reached or refused an operation."""


class ObjectNotFoundError(StorageError):
    """No object (or no complete directory) under the key."""


class IntegrityError(StorageError):
    """An object's bytes do not match its recorded SHA-256 (corrupted, truncated or replaced)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a remote store tries: ``attempts`` per request (botocore's ``standard`` retry mode:
    exponential backoff with jitter on connection errors, timeouts, 5xx and throttling), and
    ``deadline_s`` for a whole operation (an upload's every part, its copy, its checks)."""

    attempts: int = 5
    deadline_s: float = 120.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RetryPolicy:
        """From ``storage.retry``; ``base_delay_s``/``max_delay_s`` (gnvc ≤ 0.2's own backoff) are
        accepted and ignored: botocore's standard mode sets the backoff now."""
        d = d or {}
        return cls(
            attempts=max(1, int(d.get("attempts", cls.attempts))),
            deadline_s=float(d.get("deadline_s", cls.deadline_s)),
        )


def check_key(key: str) -> str:
    """Keys are relative POSIX paths without ``..``: the same key means the same place everywhere."""
    k = key.strip("/")
    if not k or any(part in ("", ".", "..") for part in k.split("/")):
        raise StorageError(f"invalid artifact key {key!r} (a relative path like 'models/tiny/abc/x.bin')")
    return k


class ArtifactStore(ABC):
    """A flat namespace of immutable-once-published objects, addressed by relative keys."""

    url: str

    # ---------------------------------------------------------------- objects (backend-specific)
    @abstractmethod
    def put_file(self, local: str | Path, key: str) -> ObjectInfo:
        """Publish a local file under ``key`` (atomically, with its SHA-256)."""

    @abstractmethod
    def get_file(self, key: str, local: str | Path) -> ObjectInfo:
        """Download ``key`` to ``local``, verified; ``local`` appears only if the check passes."""

    @abstractmethod
    def info(self, key: str) -> ObjectInfo:
        """Size and recorded SHA-256 of ``key`` (:class:`ObjectNotFoundError` if absent)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (sorted)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if absent)."""

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except ObjectNotFoundError:
            return False
        return True

    # ---------------------------------------------------------------- bytes (via temp files)
    def put_bytes(self, data: bytes, key: str) -> ObjectInfo:
        with tempfile.TemporaryDirectory(prefix="gnvc-put-") as d:
            p = Path(d) / "blob"
            p.write_bytes(data)
            return self.put_file(p, key)

    def get_bytes(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="gnvc-get-") as d:
            p = Path(d) / "blob"
            self.get_file(key, p)
            return p.read_bytes()

    # ---------------------------------------------------------------- directories
    def put_dir(self, local_dir: str | Path, prefix: str) -> dict[str, Any]:
        """Publish every file of ``local_dir`` under ``prefix/``, then the index (last).

        Files already present with the same hash are skipped, so an interrupted publish resumes
        where it stopped. Returns the index.
        """
        local_dir = Path(local_dir)
        prefix = check_key(prefix)
        if not local_dir.is_dir():
            raise StorageError(f"{local_dir}: not a directory to publish")
        from gnvc.hashing import sha256_file

        files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != INDEX_NAME)
        entries = []
        for f in files:
            rel = f.relative_to(local_dir).as_posix()
            key = f"{prefix}/{rel}"
            digest = sha256_file(f)
            try:
                current = self.info(key)
            except ObjectNotFoundError:
                current = None
            if current is None or current.sha256 != digest or current.size != f.stat().st_size:
                self.put_file(f, key)
            entries.append({"path": rel, "size": f.stat().st_size, "sha256": digest})
        index = {"format": "gnvc-artifact-dir", "version": 1, "files": entries}
        self.put_bytes(json.dumps(index, indent=1, sort_keys=True).encode(), f"{prefix}/{INDEX_NAME}")
        return index

    def get_dir(self, prefix: str, local_dir: str | Path) -> dict[str, Any]:
        """Fetch a directory published with :meth:`put_dir` into ``local_dir`` (replaced atomically)."""
        prefix = check_key(prefix)
        try:
            raw = self.get_bytes(f"{prefix}/{INDEX_NAME}")
        except ObjectNotFoundError:
            raise ObjectNotFoundError(
                f"{self.url}/{prefix}: no complete artifact directory (its {INDEX_NAME} is missing)"
            ) from None
        try:
            index = json.loads(raw)
            files = index["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"{self.url}/{prefix}/{INDEX_NAME}: unreadable index ({e})") from None
        local_dir = Path(local_dir)
        local_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.", dir=local_dir.parent))
        try:
            for entry in files:
                rel = check_key(entry["path"])
                info = self.get_file(f"{prefix}/{rel}", staging / rel)
                if info.sha256 != entry["sha256"] or info.size != entry["size"]:
                    raise IntegrityError(f"{self.url}/{prefix}/{rel}: differs from the directory's index")
            from gnvc.data.shards import publish_dir

            publish_dir(staging, local_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return index
