"""``gnvc storage`` (mb, ls, put, get) as a user types it, against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from gnvc.storage.s3 import LIFECYCLE, MiB, S3Store

from .conftest import REPO


def gnvc(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(Path(sys.executable).parent / "gnvc"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))  # fmt: skip
    if ok:
        assert proc.returncode == 0, f"gnvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_storage_commands_round_trip(seaweed, tmp_path: Path) -> None:
    ep = ["--endpoint-url", seaweed.endpoint_url]
    assert gnvc("storage", "mb", "s3://gnvc-cli", *ep, cwd=tmp_path).stdout.strip() == "created s3://gnvc-cli"
    assert gnvc("storage", "mb", "s3://gnvc-cli", *ep, cwd=tmp_path).stdout.strip() == "exists: s3://gnvc-cli"
    store = S3Store("s3://gnvc-cli", endpoint_url=seaweed.endpoint_url)
    rules = store.client.get_bucket_lifecycle_configuration(Bucket="gnvc-cli")["Rules"]
    assert {r["ID"] for r in rules} == {r["ID"] for r in LIFECYCLE["Rules"]}
    assert json.loads((REPO / "infra/s3/lifecycle.json").read_text()) == LIFECYCLE  # the file the README shows

    # A file above the multipart threshold (params.yaml's storage: section sets 5 MiB parts here).
    (tmp_path / "params.yaml").write_text("storage: {multipart_threshold_mb: 5, part_size_mb: 5}\n")
    blob = hashlib.sha256(b"x").digest() * (11 * MiB // 32)
    (tmp_path / "w.bin").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    out = gnvc("storage", "put", "w.bin", "s3://gnvc-cli/models/tiny/w.bin", *ep, cwd=tmp_path).stdout
    assert f"sha256 {digest}" in out
    head = store.client.head_object(Bucket="gnvc-cli", Key="models/tiny/w.bin")
    assert head["ETag"].strip('"').endswith("-3") and head["Metadata"]["sha256"] == digest

    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "weights.bin").write_bytes(b"\x01" * 1000)
    assert "published 2 files" in gnvc("storage", "put", "model", "s3://gnvc-cli/models/m", *ep, cwd=tmp_path).stdout

    listed = gnvc("storage", "ls", "s3://gnvc-cli/models", *ep, cwd=tmp_path).stdout.split()
    assert listed == [
        "s3://gnvc-cli/models/m/_gnvc_index.json",
        "s3://gnvc-cli/models/m/config.json",
        "s3://gnvc-cli/models/m/sub/weights.bin",
        "s3://gnvc-cli/models/tiny/w.bin",
    ]
    long_lines = gnvc("storage", "ls", "-l", "s3://gnvc-cli/models/tiny", *ep, cwd=tmp_path).stdout.splitlines()
    assert long_lines == [f"{11 * MiB:>12}  {digest}  s3://gnvc-cli/models/tiny/w.bin"]

    gnvc("storage", "get", "s3://gnvc-cli/models/tiny/w.bin", "back/", *ep, cwd=tmp_path)
    assert (tmp_path / "back" / "w.bin").read_bytes() == blob
    assert "fetched 2 files" in gnvc("storage", "get", "s3://gnvc-cli/models/m", "m2", *ep, cwd=tmp_path).stdout
    assert (tmp_path / "m2" / "sub" / "weights.bin").read_bytes() == b"\x01" * 1000

    # The endpoint from the environment (GNVC_S3_ENDPOINT_URL, set by the fixture) is enough.
    assert "w.bin" in gnvc("storage", "ls", "s3://gnvc-cli/models/tiny", cwd=tmp_path).stdout


def test_storage_command_errors_are_one_line_with_their_exit_status(seaweed, tmp_path: Path, monkeypatch) -> None:
    ep = ["--endpoint-url", seaweed.endpoint_url]
    missing = gnvc("storage", "get", "s3://gnvc-nobucket/a.bin", "a.bin", *ep, cwd=tmp_path, ok=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr or "no such artifact" in missing.stderr
    gnvc("storage", "mb", "s3://gnvc-cli", *ep, cwd=tmp_path)
    absent = gnvc("storage", "get", "s3://gnvc-cli/none.bin", "x", *ep, cwd=tmp_path, ok=False)
    assert absent.returncode == 1 and "s3://gnvc-cli/none.bin: no such artifact" in absent.stderr
    not_s3 = gnvc("storage", "ls", "/tmp", cwd=tmp_path, ok=False)
    assert not_s3.returncode == 2 and "gnvc storage works on S3 URLs" in not_s3.stderr  # a usage error
    (tmp_path / "f").write_text("x")
    no_key = gnvc("storage", "put", "f", "s3://gnvc-cli", cwd=tmp_path, ok=False)
    assert no_key.returncode == 2 and "put needs a key after the bucket" in no_key.stderr
    monkeypatch.setenv("GNVC_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    (tmp_path / "params.yaml").write_text("storage: {retry: {attempts: 2, deadline_s: 3}}\n")
    dead = gnvc("storage", "put", "f", "s3://gnvc-cli/f", cwd=tmp_path, ok=False)
    assert dead.returncode == 1 and "cannot reach the S3 endpoint http://127.0.0.1:9" in dead.stderr
    assert "nothing was published under f" in dead.stderr
