"""SHA-256 of files: the one digest that shard manifests, model directories and the artifact store
record and check (so a file verified in one place is verified the same way everywhere)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (shards and weights can be gigabytes)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
