"""The local-directory artifact store (the default): a folder tree, plus a SHA-256 sidecar per object.

``ROOT/<key>`` holds the bytes and ``ROOT/.gnvc-meta/<key>.json`` their size and hash. Publishing
writes both under temporary names in the same folders and renames the data last-but-one and the
sidecar last: a reader that races a writer sees a hash mismatch and retries, never wrong bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from gnvc.storage.base import (
    ArtifactStore,
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageError,
    check_key,
)

META_DIR = ".gnvc-meta"


def _copy_hashing(src: Path, dst_dir: Path, name: str) -> tuple[Path, int, str]:
    """Copy ``src`` into a temporary file of ``dst_dir`` while hashing; returns (tmp, size, sha256)."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dst_dir)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            while block := inp.read(1 << 20):
                h.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), size, h.hexdigest()


class LocalStore(ArtifactStore):
    """Artifacts in a local (or network-mounted) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{self.root}: cannot create the artifact directory ({e})") from None

    def _paths(self, key: str) -> tuple[Path, Path]:
        k = check_key(key)
        return self.root / k, self.root / META_DIR / f"{k}.json"

    def put_file(self, local: str | Path, key: str) -> ObjectInfo:
        src = Path(local)
        if not src.is_file():
            raise StorageError(f"{src}: no such file to publish")
        data, meta = self._paths(key)
        data.parent.mkdir(parents=True, exist_ok=True)
        meta.parent.mkdir(parents=True, exist_ok=True)
        tmp, size, digest = _copy_hashing(src, data.parent, data.name)
        info = ObjectInfo(check_key(key), size, digest)
        fd, tmp_meta = tempfile.mkstemp(prefix=f".{meta.name}.", suffix=".part", dir=meta.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"size": size, "sha256": digest}, f)
        mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.chmod(tmp_meta, mode)
        os.replace(tmp, data)
        os.replace(tmp_meta, meta)
        return info

    def info(self, key: str) -> ObjectInfo:
        data, meta = self._paths(key)
        if not data.is_file() or not meta.is_file():
            raise ObjectNotFoundError(f"{data}: no such artifact")
        try:
            m = json.loads(meta.read_text())
            return ObjectInfo(check_key(key), int(m["size"]), str(m["sha256"]))
        except (OSError, ValueError, KeyError) as e:
            raise IntegrityError(f"{meta}: unreadable checksum record ({e})") from None

    def get_file(self, key: str, local: str | Path) -> ObjectInfo:
        info = self.info(key)
        data, _ = self._paths(key)
        dst = Path(local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp, size, digest = _copy_hashing(data, dst.parent, dst.name)
        if size != info.size or digest != info.sha256:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"{data}: content does not match its recorded SHA-256 ({digest[:12]}… ≠ {info.sha256[:12]}…)"
            )
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
        return info

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        out = []
        for p in base.rglob("*") if base.is_dir() else [base]:
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not rel.startswith(META_DIR + "/") and not p.name.endswith(".part"):
                out.append(rel)
        return sorted(out)

    def delete(self, key: str) -> None:
        data, meta = self._paths(key)
        meta.unlink(missing_ok=True)
        if data.is_dir():
            shutil.rmtree(data)
        else:
            data.unlink(missing_ok=True)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
