"""Fixtures of the pipeline tests: small real data, a real (untrained) tiny VAE, a real S3 server,
Prefect's test harness, and the loopback-only network namespace the Ray tests run in.

Everything listens on 127.0.0.1 only. Tests marked ``ray`` start Ray; they run only inside a
network namespace that has nothing but loopback (Ray otherwise binds the machine's address and
probes outside hosts). ``test_ray_netns.py`` re-runs them there when pytest runs outside one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

for _k, _v in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[2]

# A miniature data set: seconds to build, still every code path (two splits, several shards).
MINI_DATA = {
    "sources": ["synthetic"],
    "frames": 5,
    "clips_per_shard": 3,
    "train": {"size": [32, 32], "synthetic_clips": 7},
    "val": {"size": [48, 48], "synthetic_clips": 2},
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts Ray; runs only in a loopback-only network namespace")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from flows.netns import only_loopback

    if only_loopback():
        return
    skip = pytest.mark.skip(reason="starts Ray: run in a loopback-only network namespace (test_ray_netns does)")
    for item in items:
        if "ray" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mini_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared clip data set (manifest path): 7 train clips 32², 2 val clips 48², 5 frames."""
    from gnvc.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("clips") / "clips"
    prepare_dataset({**MINI_DATA, "out_dir": str(out)}, progress=False)
    return out / "manifest.json"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete model directory of the tiny profile (untrained: real classes, real weights files)."""
    from gnvc.models.model_dir import GnvcModel

    out = tmp_path_factory.mktemp("model") / "tiny"
    GnvcModel.from_profile("tiny", seed=0).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def mini_latents(tmp_path_factory: pytest.TempPathFactory, mini_clips: Path, tiny_model_dir: Path) -> Path:
    """Latent shards of :func:`mini_clips` (manifest path), encoded in this process."""
    from gnvc.data.latents import encode_latents

    out = tmp_path_factory.mktemp("latents") / "latents"
    encode_latents(
        {"clips_manifest": str(mini_clips), "vae": str(tiny_model_dir), "out_dir": str(out), "batch_size": 3},
        progress=False,
    )
    return out / "manifest.json"


@pytest.fixture()
def seaweed(tmp_path: Path) -> Iterator[object]:
    """A real S3 server (SeaweedFS) on 127.0.0.1 with its own keys, and the env a client needs."""
    from gnvc.storage.seaweed import SeaweedS3

    server = SeaweedS3(tmp_path / "seaweed").start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness: one temporary API server (SQLite) for this session and its Ray workers."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    # 600 s: on a loaded machine importing Prefect and migrating its database took 328 s (measured).
    with prefect_test_harness(server_startup_timeout=600):
        yield
