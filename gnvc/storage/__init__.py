"""Artifact store: shards, checkpoints and reports in a local directory (default) or on S3.

``open_store("artifacts")`` → :class:`LocalStore`; ``open_store("s3://bucket/prefix",
endpoint_url="http://127.0.0.1:8333")`` → :class:`S3Store`. ``store_from_params`` reads the
``storage:`` section of params.yaml. Key layout used by the flows (docs/pipeline.md)::

    data/clips/<dataset_sha256>/...        clip shards + manifest
    data/latents/<dataset_sha256>/...      latent shards + manifest
    models/<profile>/<weights_hash>/...    a complete model directory
    reports/<run id>/...                   evaluation reports
"""

from __future__ import annotations

import os
from typing import Any

from gnvc.storage.base import (
    INDEX_NAME,
    ArtifactStore,
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    RetryPolicy,
    StorageError,
)
from gnvc.storage.local import LocalStore

MiB = 1 << 20


def open_store(url: str, **options: Any) -> ArtifactStore:
    """A store for ``url``: ``s3://bucket/prefix`` (options go to :class:`S3Store`) or a directory."""
    if url.startswith("s3://"):
        from gnvc.storage.s3 import S3Store

        return S3Store(url, **options)
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"unsupported artifact store URL {url!r} (use a directory or s3://bucket/prefix)")
    return LocalStore(url.removeprefix("file://"))


def store_from_params(section: dict[str, Any] | None, *, url: str | None = None, **overrides: Any) -> ArtifactStore:
    """The store the ``storage:`` section describes at ``url`` (else ``GNVC_STORE_URL``, else its ``url``)."""
    s = dict(section or {})
    url = url or os.environ.get("GNVC_STORE_URL") or str(s.get("url") or "artifacts")
    if not url.startswith("s3://"):
        return open_store(url)
    opts: dict[str, Any] = {
        "endpoint_url": s.get("endpoint_url") or None,
        "region": s.get("region") or None,
        "multipart_threshold": int(float(s.get("multipart_threshold_mb", 8)) * MiB),
        "part_size": int(float(s.get("part_size_mb", 8)) * MiB),
        "max_concurrency": int(s.get("max_concurrency", 4)),
        "retry": RetryPolicy.from_dict(s.get("retry")),
        "create_bucket": bool(s.get("create_bucket", False)),
    }
    opts.update(overrides)
    return open_store(url, **opts)


__all__ = [
    "INDEX_NAME",
    "ArtifactStore",
    "IntegrityError",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFoundError",
    "RetryPolicy",
    "StorageError",
    "open_store",
    "store_from_params",
]
