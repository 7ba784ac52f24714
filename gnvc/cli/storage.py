"""``gnvc storage``: the S3 artifact store from the command line, with nothing else installed.

``mb`` creates a bucket (and its lifecycle rules), ``ls`` lists it, ``put``/``get`` copy files and
published directories through :mod:`gnvc.storage`, so with the same guarantees as the pipeline: a
SHA-256 recorded with every object and checked on every download, nothing visible under a key
until it is complete, retries with a deadline. The AWS CLI is not needed (``make install`` does
not provide it). Transfer settings come from ``storage:`` in ``--params`` when that file exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from gnvc.errors import UsageError
from gnvc.storage import INDEX_NAME, StorageError, store_from_params
from gnvc.storage.s3 import LIFECYCLE, S3Store, parse_s3_url

endpoint_option = click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="S3-compatible endpoint, e.g. http://127.0.0.1:8333 (default: $GNVC_S3_ENDPOINT_URL, else AWS).",
)
params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path),
    default=Path("params.yaml"),
    show_default=True,
    help="Parameter file whose storage: section sets part size, concurrency, retries (if it exists).",
)


def _open(url: str, endpoint_url: str | None, params_path: Path, **extra: Any) -> tuple[S3Store, str]:
    """The store at the bucket of ``url`` and the key (path) ``url`` names inside it."""
    if not url.startswith("s3://"):
        raise UsageError(f"{url}: gnvc storage works on S3 URLs (s3://bucket/key)")
    bucket, key = parse_s3_url(url)
    section: dict[str, Any] = {}
    if params_path.is_file():
        try:
            section = dict((yaml.safe_load(params_path.read_text()) or {}).get("storage") or {})
        except (yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
            raise UsageError(f"{params_path}: unreadable storage: section ({e})") from None
    if endpoint_url:
        section["endpoint_url"] = endpoint_url
    store = store_from_params(section, url=f"s3://{bucket}", **extra)
    assert isinstance(store, S3Store)
    return store, key


@click.group("storage")
def storage() -> None:
    """The S3 artifact store: make a bucket, list, upload and download with checksums."""


@storage.command("mb")
@click.argument("url")
@endpoint_option
@click.option("--region", default=None, help="Bucket region (default: $AWS_DEFAULT_REGION).")
@click.option(
    "--lifecycle/--no-lifecycle",
    default=True,
    show_default=True,
    help="Set the rules that clean up after crashed uploads (infra/s3/lifecycle.json).",
)
@params_option
def make_bucket(url: str, endpoint_url: str | None, region: str | None, lifecycle: bool, params_path: Path) -> None:
    """Create the bucket of URL (s3://bucket) if it does not exist."""
    extra = {"region": region} if region else {}
    store, key = _open(url, endpoint_url, params_path, **extra)
    if key:
        raise UsageError(f"{url}: mb takes a bucket (s3://{store.bucket}), not a key")
    created = store.ensure_bucket(lifecycle=LIFECYCLE if lifecycle else None)
    click.echo(f"{'created' if created else 'exists:'} s3://{store.bucket}")


@storage.command("ls")
@click.argument("url")
@click.option("-l", "--long", "long_", is_flag=True, help="Also print each object's size and recorded SHA-256.")
@endpoint_option
@params_option
def list_objects(url: str, long_: bool, endpoint_url: str | None, params_path: Path) -> None:
    """List the objects under URL (s3://bucket or s3://bucket/prefix)."""
    store, prefix = _open(url, endpoint_url, params_path)
    for key in store.list(prefix):
        if not long_:
            click.echo(f"s3://{store.bucket}/{key}")
            continue
        try:
            info = store.info(key)
            click.echo(f"{info.size:>12}  {info.sha256}  s3://{store.bucket}/{key}")
        except StorageError:  # not published by gnvc (e.g. DVC's cache): no recorded hash
            size = store.client.head_object(Bucket=store.bucket, Key=key)["ContentLength"]
            click.echo(f"{size:>12}  {'-':<64}  s3://{store.bucket}/{key}")


@storage.command("put")
@click.argument("local", type=click.Path(exists=True, path_type=Path))
@click.argument("url")
@endpoint_option
@params_option
def put(local: Path, url: str, endpoint_url: str | None, params_path: Path) -> None:
    """Publish LOCAL (a file, or a directory with its index) under URL (s3://bucket/key)."""
    store, key = _open(url, endpoint_url, params_path, progress=True)
    if not key:
        raise UsageError(f"{url}: put needs a key after the bucket (s3://{store.bucket}/KEY)")
    if local.is_dir():
        index = store.put_dir(local, key)
        click.echo(f"published {len(index['files'])} files under s3://{store.bucket}/{key}/")
    else:
        info = store.put_file(local, key)
        click.echo(f"published s3://{store.bucket}/{key} ({info.size} bytes, sha256 {info.sha256})")


@storage.command("get")
@click.argument("url")
@click.argument("local_arg", metavar="LOCAL", type=click.Path())
@endpoint_option
@params_option
def get(url: str, local_arg: str, endpoint_url: str | None, params_path: Path) -> None:
    """Download URL (an object, or a directory published with put) to LOCAL, checked.

    An object goes into LOCAL if LOCAL is a directory or ends with a slash, else to LOCAL itself.
    """
    local = Path(local_arg)
    store, key = _open(url, endpoint_url, params_path, progress=True)
    if not key:
        raise UsageError(f"{url}: get needs a key after the bucket (s3://{store.bucket}/KEY)")
    if store.exists(f"{key}/{INDEX_NAME}"):
        index = store.get_dir(key, local)
        click.echo(f"fetched {len(index['files'])} files into {local}/ (every SHA-256 checked)")
        return
    if local.is_dir() or local_arg.endswith("/"):
        local = local / key.rsplit("/", 1)[-1]
    info = store.get_file(key, local)
    click.echo(f"fetched {local} ({info.size} bytes, sha256 {info.sha256} checked)")
