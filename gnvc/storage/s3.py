"""The S3 artifact store: any S3-compatible service, the endpoint overridable.

Transfers are boto3's managed transfers (``upload_file``/``download_fileobj``/``copy`` with a
:class:`~boto3.s3.transfer.TransferConfig`): multipart above ``multipart_threshold``, parts of
``part_size`` sent ``max_concurrency`` at a time, a failed multipart upload aborted. Retries are
botocore's ``standard`` mode (connection errors, timeouts, 5xx, throttling; exponential backoff with
jitter) bounded by ``retry.attempts`` per request, and a hook bounds the whole operation by
``retry.deadline_s``. On top of that, gnvc's own guarantees:

- **Checksums**: the SHA-256 of the whole object goes into its metadata (``x-amz-meta-sha256``);
  after an upload the object's size and hash are read back, and every download is hashed and
  compared before the local file appears.
- **Atomic publish**: the bytes go to a staging key (``.gnvc-staging/<random>`` at the bucket's
  root), are checked there, then a server-side copy (itself atomic: one CopyObject or one
  CompleteMultipartUpload) puts them under the final key and the staging object is deleted. So the
  final key never holds a partial or unchecked object, whatever fails when. Staging leftovers of a
  crash are removed by the bucket rule in ``infra/s3/lifecycle.json`` (``gnvc storage mb`` sets it).
- **Clear errors**: authentication and missing buckets fail at once with what to set; when the
  retries or the deadline run out, one :class:`~gnvc.storage.base.StorageError` says what failed,
  where, and that nothing was published under the key.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role); the endpoint from the argument, ``GNVC_S3_ENDPOINT_URL`` or boto3's
own ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gnvc.errors import GnvcError
from gnvc.storage.base import (
    ArtifactStore,
    IntegrityError,
    ObjectInfo,
    ObjectNotFoundError,
    RetryPolicy,
    StorageError,
    check_key,
)

MiB = 1 << 20
STAGING = ".gnvc-staging"  # bucket-root prefix of not-yet-published uploads (one lifecycle rule expires it)
AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
log = logging.getLogger(__name__)
# The bucket rules every gnvc bucket should carry (``gnvc storage mb`` sets them; the same JSON is
# infra/s3/lifecycle.json): a crash mid-transfer leaves parts or a staging object, never for long.
LIFECYCLE: dict[str, Any] = {
    "Rules": [
        {
            "ID": "abort-incomplete-multipart-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
        {
            "ID": "expire-gnvc-staging",
            "Status": "Enabled",
            "Filter": {"Prefix": f"{STAGING}/"},
            "Expiration": {"Days": 1},
        },
    ]
}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes)."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise StorageError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
    return u.netloc, u.path.strip("/")


class DeadlineExceeded(Exception):
    """Raised inside botocore (from its retry hook) once an operation has used up its deadline."""


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


class _Progress:
    """Thread-safe byte counter for boto3's transfer callbacks (called from its worker threads with
    increments, negative when a retried part rewinds); forwards the running total to ``hook``."""

    def __init__(self, total: int, desc: str, hook: Callable[[int, int], None] | None, bar: bool) -> None:
        from tqdm import tqdm

        self.total, self.done, self.hook = total, 0, hook
        self.lock = threading.Lock()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not bar)

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            self.bar.update(n)
            done = self.done
        if self.hook is not None:
            self.hook(done, self.total)

    def close(self) -> None:
        self.bar.close()


class S3Store(ArtifactStore):
    """Artifacts under ``s3://bucket/prefix``.

    ``on_progress(bytes_done, total)`` is called as an upload or download advances (from boto3's
    worker threads): progress hooks, and the fault tests that kill the server mid-transfer. A store
    runs one operation at a time (the deadline is per store); use one store per thread.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        create_bucket: bool = False,
        progress: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if part_size < 5 * MiB:
            # S3 rejects non-final parts under 5 MiB at CompleteMultipartUpload: fail early instead.
            raise StorageError(f"storage.part_size must be ≥ 5 MiB (S3's minimum part size), got {part_size}")
        self.retry = retry or RetryPolicy()
        self.progress = progress
        self.on_progress = on_progress
        self.transfer = TransferConfig(
            multipart_threshold=max(int(multipart_threshold), 1),
            multipart_chunksize=int(part_size),
            max_concurrency=max(int(max_concurrency), 1),
            num_download_attempts=self.retry.attempts,
            preferred_transfer_client="classic",
        )
        self.endpoint_url = endpoint_url or os.environ.get("GNVC_S3_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": self.retry.attempts},
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            signature_version="s3v4",
            max_pool_connections=max(10, int(max_concurrency) + 2),
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=region or None, config=config
        )
        self.client.meta.events.register_first("needs-retry.s3", self._deadline_hook)
        self._deadline: float | None = None
        self.where = f"{self.url} (endpoint {self.endpoint_url or 'AWS'})"
        if create_bucket:
            self.ensure_bucket()

    # ---------------------------------------------------------------- errors and the deadline
    def _deadline_hook(self, caught_exception: BaseException | None = None, response: Any = None, **_: Any) -> None:
        """Runs before botocore's retry handler: once the operation's deadline has passed, a failed
        request is not retried (raising here ends botocore's loop and s3transfer's transfer)."""
        deadline = self._deadline
        if deadline is None or time.monotonic() < deadline:
            return
        status = int(response[0].status_code) if response is not None and response[0] is not None else 0
        if caught_exception is not None or status >= 500 or status == 429:
            last = caught_exception or f"HTTP {status}"
            raise DeadlineExceeded(f"gave up at the {self.retry.deadline_s:g} s deadline (last error: {last})")

    @staticmethod
    def _code(e: BaseException) -> str | None:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            return str(e.response.get("Error", {}).get("Code"))
        return None

    @staticmethod
    def _root(e: BaseException) -> BaseException:
        """The informative error under boto3's wrappers (S3UploadFailedError, RetriesExceededError)."""
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError
        from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceeded

        for _ in range(8):
            if isinstance(e, RetriesExceededError | TransferRetriesExceeded) and e.last_exception is not None:
                e = e.last_exception
            elif isinstance(e, S3UploadFailedError) and (e.__cause__ or e.__context__):
                e = e.__cause__ or e.__context__  # type: ignore[assignment]
            else:
                break
        return e

    def _describe(self, e: BaseException) -> str:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        e = self._root(e)
        if isinstance(e, DeadlineExceeded):
            return str(e)
        if isinstance(e, NoCredentialsError):
            return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
        if isinstance(e, EndpointConnectionError | ConnectionClosedError):
            return f"cannot reach the S3 endpoint {self.endpoint_url or 'AWS'} ({e})"
        if isinstance(e, ClientError):
            code = self._code(e)
            msg = e.response.get("Error", {}).get("Message", "")
            if code in AUTH_CODES:
                return f"S3 refused the credentials ({code}: {msg}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            if code == "NoSuchBucket":
                return f"bucket {self.bucket!r} does not exist (create it: gnvc storage mb s3://{self.bucket})"
            return f"{code}: {msg}"
        return f"{type(e).__name__}: {e}"

    @contextlib.contextmanager
    def _op(self, what: str, *, unpublished: str | None = None) -> Iterator[None]:
        """One store operation: starts the deadline (if not inside another) and turns any failure
        into one :class:`StorageError` that says what failed and where."""
        outer = self._deadline is None
        if outer:
            self._deadline = time.monotonic() + self.retry.deadline_s
        try:
            yield
        except GnvcError as e:
            if unpublished and not isinstance(e, ObjectNotFoundError):
                raise type(e)(f"{e}; nothing was published under {unpublished}") from e
            raise
        except Exception as e:  # noqa: BLE001 - every boto error becomes a StorageError just below
            msg = f"{what} ({self.where}): {self._describe(e)}"
            if unpublished:
                msg += f"; nothing was published under {unpublished}"
            raise StorageError(msg) from e
        finally:
            if outer:
                self._deadline = None

    def _full(self, key: str) -> str:
        k = check_key(key)
        full = f"{self.prefix}/{k}" if self.prefix else k
        if full.split("/", 1)[0] == STAGING:
            raise StorageError(f"invalid artifact key {key!r} ({STAGING}/ holds gnvc's unfinished uploads)")
        return full

    def _head(self, full: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as e:
            if self._code(e) in NOT_FOUND_CODES:
                raise ObjectNotFoundError(f"s3://{self.bucket}/{full}: no such artifact") from None
            raise

    # ---------------------------------------------------------------- bucket
    def ensure_bucket(self, *, lifecycle: dict[str, Any] | None = None) -> bool:
        """Create the bucket if it is missing (True if created); optionally set its lifecycle rules."""
        from botocore.exceptions import ClientError

        created = False
        with self._op(f"create bucket {self.bucket}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if self._code(e) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                region = self.client.meta.region_name
                kw: dict[str, Any] = {"Bucket": self.bucket}
                if region and region != "us-east-1" and not self.endpoint_url:
                    kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
                self.client.create_bucket(**kw)
                created = True
            if lifecycle is not None:
                self.client.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration=lifecycle)
        return created

    # ---------------------------------------------------------------- objects
    def info(self, key: str) -> ObjectInfo:
        full = self._full(key)
        with self._op(f"stat {key}"):
            h = self._head(full)
        digest = (h.get("Metadata") or {}).get("sha256")
        if not digest:
            raise IntegrityError(
                f"s3://{self.bucket}/{full}: no sha256 metadata (not published by gnvc), so it cannot be verified"
            )
        return ObjectInfo(check_key(key), int(h["ContentLength"]), digest)

    def _check(self, full: str, size: int, digest: str, src: Path) -> None:
        h = self._head(full)
        if int(h["ContentLength"]) != size or (h.get("Metadata") or {}).get("sha256") != digest:
            raise IntegrityError(f"s3://{self.bucket}/{full}: after upload, size/hash read back differ from {src}")

    def put_file(self, local: str | Path, key: str) -> ObjectInfo:
        src = Path(local)
        if not src.is_file():
            raise StorageError(f"{src}: no such file to publish")
        full = self._full(key)
        size, digest = _hash_file(src)
        meta = {"sha256": digest}
        staging = f"{STAGING}/{uuid.uuid4().hex}"
        progress = _Progress(size, f"upload {key}", self.on_progress, self.progress)
        published = False
        try:
            with self._op(f"upload {src} to {key}", unpublished=key):
                self.client.upload_file(
                    str(src),
                    self.bucket,
                    staging,
                    ExtraArgs={"Metadata": meta},
                    Config=self.transfer,
                    Callback=progress,
                )
                self._check(staging, size, digest, src)
                self.client.copy(
                    {"Bucket": self.bucket, "Key": staging},
                    self.bucket,
                    full,
                    ExtraArgs={"Metadata": meta, "MetadataDirective": "REPLACE"},
                    Config=self.transfer,
                )
                published = True
                try:
                    self._check(full, size, digest, src)
                except IntegrityError:  # replaced under us since the copy: withdraw it, never serve it
                    self.client.delete_object(Bucket=self.bucket, Key=full)
                    raise
        finally:
            progress.close()
            self._drop_staging(staging, quick=not published)
        return ObjectInfo(check_key(key), size, digest)

    def _drop_staging(self, staging: str, *, quick: bool) -> None:
        """Best effort: after a failure the server may be gone, so one try (the bucket's lifecycle
        rule removes what is left); after a success, the usual retries."""
        self._deadline = time.monotonic() if quick else None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=staging)
        except Exception as e:  # noqa: BLE001 - the publish's own outcome is what matters
            log.info("could not delete the staging object s3://%s/%s (%s)", self.bucket, staging, e)
        finally:
            self._deadline = None

    def get_file(self, key: str, local: str | Path) -> ObjectInfo:
        info = self.info(key)
        full = self._full(key)
        dst = Path(local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
        tmp = Path(tmp_name)
        progress = _Progress(info.size, f"download {key}", self.on_progress, self.progress)
        try:
            with self._op(f"download {key}"), os.fdopen(fd, "wb") as out:
                self.client.download_fileobj(self.bucket, full, out, Config=self.transfer, Callback=progress)
            got_size, got = _hash_file(tmp)
            if got_size != info.size or got != info.sha256:
                raise IntegrityError(
                    f"s3://{self.bucket}/{full}: downloaded {got_size} bytes with SHA-256 {got[:12]}…, "
                    f"expected {info.size} bytes with {info.sha256[:12]}… (corrupted object)"
                )
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            progress.close()
        return info

    def list(self, prefix: str = "") -> list[str]:
        base = self.prefix + "/" if self.prefix else ""
        p = prefix.strip("/")
        full_prefix = base + (p + "/" if p else "")
        keys: list[str] = []
        with self._op(f"list {prefix or '/'}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(o["Key"][len(base) :] for o in page.get("Contents", []))
        return sorted(k for k in keys if not (k + "/").startswith(STAGING + "/"))

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._op(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=full)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
