"""The S3 artifact store (boto3): any S3-compatible service, the endpoint overridable.

- **Multipart** above ``multipart_threshold``: parts of ``part_size`` bytes, each sent with its
  Content-MD5 (the server rejects a part damaged in transit), each retried on its own, so a
  dropped connection costs one part, not the whole upload.
- **Atomic**: S3 makes an object visible only when a PUT or CompleteMultipartUpload succeeds, so
  the final key never holds a partial object. A failed upload is aborted (best effort) and the
  error says that nothing was published.
- **Checksums**: the SHA-256 of the whole object goes into its metadata (``x-amz-meta-sha256``);
  after an upload the object's size and hash are read back, and every download is hashed while
  it streams and compared before the local file appears.
- **Retries**: botocore's own retries are off and :class:`~gnvc.storage.base.RetryPolicy` decides
  (connection errors, timeouts, 5xx, throttling, BadDigest); authentication and missing buckets
  fail at once with a message that says what to set.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role); the endpoint from the argument, ``GNVC_S3_ENDPOINT_URL`` or boto3's
own ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

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
RETRYABLE_CODES = {
    "500",
    "502",
    "503",
    "504",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "BadDigest",  # the part was damaged in transit: send it again
}
AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes)."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise StorageError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
    return u.netloc, u.path.strip("/")


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3Store(ArtifactStore):
    """Artifacts under ``s3://bucket/prefix``."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_threshold: int = 8 * MiB,
        part_size: int = 8 * MiB,
        retry: RetryPolicy | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        create_bucket: bool = False,
        progress: bool = False,
        on_part: Callable[[int, int], None] | None = None,
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if part_size < 5 * MiB:
            # S3 rejects non-final parts under 5 MiB at CompleteMultipartUpload: fail early instead.
            raise StorageError(f"storage.part_size must be ≥ 5 MiB (S3's minimum part size), got {part_size}")
        self.multipart_threshold = max(int(multipart_threshold), 1)
        self.part_size = int(part_size)
        self.retry = retry or RetryPolicy()
        self.progress = progress
        self.on_part = on_part  # called after each uploaded part (progress hooks, fault-injection tests)
        self.endpoint_url = endpoint_url or os.environ.get("GNVC_S3_ENDPOINT_URL") or None
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"total_max_attempts": 1, "mode": "standard"},
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                signature_version="s3v4",
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=region or None, config=config
            )
        self.client = client
        self.where = f"{self.url} (endpoint {self.endpoint_url or 'AWS'})"
        if create_bucket:
            self.ensure_bucket()

    # ---------------------------------------------------------------- error handling
    @staticmethod
    def _code(e: BaseException) -> str | None:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            return str(e.response.get("Error", {}).get("Code"))
        return None

    def _retryable(self, e: BaseException) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(e, ClientError):
            code = self._code(e)
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code in RETRYABLE_CODES or status >= 500
        if isinstance(e, BotoCoreError):  # connection refused/reset, timeouts, truncated streams
            from botocore.exceptions import NoCredentialsError, ParamValidationError

            return not isinstance(e, NoCredentialsError | ParamValidationError)
        return isinstance(e, ConnectionError | TimeoutError | OSError)

    def _describe(self, e: BaseException) -> str:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(e, NoCredentialsError):
            return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
        if isinstance(e, EndpointConnectionError):
            return f"cannot reach the S3 endpoint {self.endpoint_url or 'AWS'} ({e})"
        if isinstance(e, ClientError):
            code = self._code(e)
            msg = e.response.get("Error", {}).get("Message", "")
            if code in AUTH_CODES:
                return f"S3 refused the credentials ({code}: {msg}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            if code == "NoSuchBucket":
                return f"bucket {self.bucket!r} does not exist (create it, e.g. `aws s3 mb s3://{self.bucket}`)"
            return f"{code}: {msg}"
        return f"{type(e).__name__}: {e}"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        return self.retry.call(fn, what=f"{what} ({self.where})", retryable=self._retryable, describe=self._describe)

    def _full(self, key: str) -> str:
        k = check_key(key)
        return f"{self.prefix}/{k}" if self.prefix else k

    # ---------------------------------------------------------------- bucket
    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        def head() -> bool:
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return True
            except ClientError as e:
                if self._code(e) in ("404", "NoSuchBucket", "NotFound"):
                    return False
                raise

        if not self._call(f"check bucket {self.bucket}", head):
            self._call(f"create bucket {self.bucket}", lambda: self.client.create_bucket(Bucket=self.bucket))

    # ---------------------------------------------------------------- objects
    def info(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        full = self._full(key)

        def head() -> dict[str, Any]:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as e:
                if self._code(e) in ("404", "NoSuchKey", "NotFound"):
                    raise ObjectNotFoundError(f"s3://{self.bucket}/{full}: no such artifact") from None
                raise

        h = self._call(f"stat {key}", head)
        digest = (h.get("Metadata") or {}).get("sha256")
        if not digest:
            raise IntegrityError(
                f"s3://{self.bucket}/{full}: no sha256 metadata (not published by gnvc), so it cannot be verified"
            )
        return ObjectInfo(check_key(key), int(h["ContentLength"]), digest)

    def put_file(self, local: str | Path, key: str) -> ObjectInfo:
        src = Path(local)
        if not src.is_file():
            raise StorageError(f"{src}: no such file to publish")
        full = self._full(key)
        size = src.stat().st_size
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while block := f.read(MiB):
                h.update(block)
        digest = h.hexdigest()
        meta = {"sha256": digest}
        if size <= self.multipart_threshold:
            body = src.read_bytes()
            self._call(
                f"upload {src} to {key}",
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=body, ContentMD5=_md5_b64(body), Metadata=meta
                ),
            )
        else:
            self._multipart(src, full, key, size, meta)
        info = self.info(key)
        if info.size != size or info.sha256 != digest:
            raise IntegrityError(f"s3://{self.bucket}/{full}: after upload, size/hash read back differ from {src}")
        return info

    def _multipart(self, src: Path, full: str, key: str, size: int, meta: dict[str, str]) -> None:
        from botocore.exceptions import ClientError

        created = self._call(
            f"start multipart upload of {key}",
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=full, Metadata=meta),
        )
        upload_id = created["UploadId"]
        n_parts = (size + self.part_size - 1) // self.part_size
        parts: list[dict[str, Any]] = []
        try:
            with (
                open(src, "rb") as f,
                tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {key}", disable=not self.progress) as bar,
            ):
                for number in range(1, n_parts + 1):
                    chunk = f.read(self.part_size)
                    md5 = _md5_b64(chunk)
                    r = self._call(
                        f"upload part {number}/{n_parts} of {key}",
                        lambda chunk=chunk, number=number, md5=md5: self.client.upload_part(
                            Bucket=self.bucket,
                            Key=full,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=chunk,
                            ContentMD5=md5,
                        ),
                    )
                    parts.append({"PartNumber": number, "ETag": r["ETag"]})
                    bar.update(len(chunk))
                    if self.on_part is not None:
                        self.on_part(number, n_parts)

            def complete() -> Any:
                try:
                    return self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
                except ClientError as e:
                    # A retried Complete whose first attempt did land: the object is there, whole.
                    if self._code(e) == "NoSuchUpload":
                        try:
                            if self.info(key).sha256 == meta["sha256"]:
                                return None
                        except StorageError:
                            pass
                    raise

            self._call(f"complete multipart upload of {key}", complete)
        except BaseException as e:
            self._abort(full, upload_id)
            if isinstance(e, StorageError):
                raise StorageError(f"{e}; the upload was aborted and nothing was published under {key}") from e
            raise

    def _abort(self, full: str, upload_id: str) -> None:
        """Best effort: free the parts (if the server is down, its lifecycle rules will)."""
        quick = RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=0.5, deadline_s=5.0)
        with contextlib.suppress(Exception):  # the original error is the one to report
            quick.call(
                lambda: self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id),
                what="abort",
                retryable=self._retryable,
            )

    def get_file(self, key: str, local: str | Path) -> ObjectInfo:
        info = self.info(key)
        full = self._full(key)
        dst = Path(local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                self._download(full, key, info.size, out)
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                while block := f.read(MiB):
                    h.update(block)
            got_size = tmp.stat().st_size
            if got_size != info.size or h.hexdigest() != info.sha256:
                raise IntegrityError(
                    f"s3://{self.bucket}/{full}: downloaded {got_size} bytes with SHA-256 {h.hexdigest()[:12]}…, "
                    f"expected {info.size} bytes with {info.sha256[:12]}… (corrupted object)"
                )
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return info

    def _download(self, full: str, key: str, size: int, out: Any) -> None:
        """Ranged GETs of ``part_size`` bytes, each retried alone; writes in order to ``out``."""
        offset = 0
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {key}", disable=not self.progress) as bar:
            while offset < size or size == 0:
                end = min(offset + self.part_size, size) - 1

                def fetch(offset: int = offset, end: int = end) -> bytes:
                    kw: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
                    if size:
                        kw["Range"] = f"bytes={offset}-{end}"
                    body = self.client.get_object(**kw)["Body"]
                    try:
                        return body.read()
                    finally:
                        body.close()

                data = self._call(f"download {key} bytes {offset}-{end}", fetch)
                if size == 0:
                    return
                if len(data) != end - offset + 1:
                    raise IntegrityError(f"s3://{self.bucket}/{full}: short read at byte {offset} (object changed?)")
                out.write(data)
                offset += len(data)
                bar.update(len(data))

    def list(self, prefix: str = "") -> list[str]:
        base = self.prefix + "/" if self.prefix else ""
        p = prefix.strip("/")
        full_prefix = base + (p + "/" if p else "")

        def run() -> list[str]:
            keys: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(o["Key"][len(base) :] for o in page.get("Contents", []))
            return keys

        return sorted(self._call(f"list {prefix or '/'}", run))

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call(f"delete {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=full))


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
