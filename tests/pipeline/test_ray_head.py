"""infra/README.md's "Ray job on the head node" block, run as written: start a head, submit the
training job with ``ray job submit``, stop the head by its pid.

Issue 10: that sequence failed on the head node itself (``AuthenticationError … RAY_AUTH_MODE is
currently 'disabled'``): ``ray start --head`` turns token auth on whenever ``~/.ray/auth_token``
exists (any local ``ray.init`` creates it), and every client then needs ``RAY_AUTH_MODE=token``.
The README now turns token auth on explicitly. The test takes the block from the README (only
``WORKDIR`` and ``STAGES`` changed: a miniature ``prepare`` instead of GPU training), checks right
after the head is up that a submit without ``RAY_AUTH_MODE=token`` is refused with that very
error, then runs the rest: the job must succeed, its data be published, and after
``kill $RAY_HEAD_PID`` no Ray process may be left. It runs in a private PID namespace inside the
loopback-only network namespace (``ray``-marked): nothing can leak, and ``ray stop`` (which stops
every Ray on a machine) is never used. ``HOME`` is a temporary directory, so the head's token
(``~/.ray/auth_token``) and log stay there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import MINI_DATA, REPO

pytestmark = pytest.mark.ray

BLOCK = re.compile(r"<!-- ray-head-job:[^>]*-->\s*```bash\n(.*?)```\s*<!-- /ray-head-job -->", re.S)
NO_TOKEN_CHECK = """\
if env -u RAY_AUTH_MODE ray job submit --address http://127.0.0.1:8265 -- true 2> ~/no-token.err; then exit 3; fi
grep -q "RAY_AUTH_MODE is currently 'disabled'" ~/no-token.err
"""
NOTHING_LEFT = """\
wait $RAY_HEAD_PID || true
for i in $(seq 60); do
  left=$(ps -e -o pid=,comm= | awk '$1 != 1 && $2 != "ps" && $2 != "awk" && $2 != "bash"')
  [ -z "$left" ] && break
  sleep 1
done
echo "left over: [$left]"
"""


def readme_block() -> str:
    m = BLOCK.search((REPO / "infra/README.md").read_text())
    assert m, "infra/README.md lost its ray-head-job block"
    return m.group(1)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare for a private PID namespace")
def test_readme_head_node_sequence(tmp_path: Path) -> None:
    block = readme_block()
    assert "export RAY_AUTH_MODE=token" in block and "ray stop" not in block
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(
        {"profile": "tiny", "data": {**MINI_DATA, "out_dir": "data/clips"}, "storage": {"url": str(work / "store")}}
    ))  # fmt: skip
    lines = block.splitlines()
    site = {"WORKDIR": f"WORKDIR={work}", "STAGES": "STAGES=prepare"}
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0]
        if name in site:
            lines[i] = site.pop(name)
    assert not site, f"the block no longer sets {sorted(site)}"
    # Right after the head is up: a client without RAY_AUTH_MODE=token is refused (the error).
    up = next(i for i, line in enumerate(lines) if line.startswith("until ")) + 1
    script = "\n".join(["set -eu", *lines[:up], NO_TOKEN_CHECK, *lines[up:], NOTHING_LEFT])
    ray_tmp = tempfile.mkdtemp(prefix="gnvc-rh-", dir="/tmp")  # short: Ray's socket paths
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PREFECT_API"))}
    env.update(HOME=str(home), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}")  # fmt: skip
    try:
        proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", script], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=540)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log = home / "ray-head.log"
    out = proc.stdout + proc.stderr + "\n--- ~/ray-head.log:\n" + (log.read_text()[-3000:] if log.exists() else "")
    assert proc.returncode == 0, out[-8000:]
    assert "succeeded" in out and "left over: []" in out, out[-6000:]
    assert (home / ".ray/auth_token").is_file()  # the head's token went to (the test's) HOME
    from gnvc.data.shards import read_manifest
    from gnvc.storage import open_store

    digest = read_manifest(work / "data/clips").data["dataset_sha256"]
    fetched = tmp_path / "fetched"
    open_store(str(work / "store")).get_dir(f"data/clips/{digest[:16]}", fetched)
    assert (fetched / "manifest.json").read_bytes() == (work / "data/clips/manifest.json").read_bytes()
