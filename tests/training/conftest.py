"""Fixtures of the training tests: tiny models of the real classes, built in a fraction of a second."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..refiner.conftest import TINY_REFINER as _REFINER
from ..refiner.conftest import _one_thread  # noqa: F401  (one torch thread here too)

# The refiner tests' tiny DiT, with the adapter reading this profile's 16 context channels.
TINY_REFINER: dict[str, Any] = {**copy.deepcopy(_REFINER), "adapter": {**_REFINER["adapter"], "context_channels": 16}}

# A profile small enough for optimisation tests on the CPU (the real classes, small widths).
TEST_PROFILE: dict[str, Any] = {
    "name": "tiny",
    "vae": {
        "base_dim": 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 2, 2],
        "num_res_blocks": 1,
        "temperal_downsample": [False, True, True],
        "latents_mean": [0.0] * 16,
        "latents_std": [1.0] * 16,
    },
    "codec": {
        "latent_channels": 16,
        "channels": 32,
        "y_channels": 16,
        "z_channels": 16,
        "context_channels": 16,
        "num_qualities": 3,
        "gain_range": [-1.0, 1.0],
    },
    "coding": {"intra_period": 0, "t_n": 0.7, "steps": 3},
    "refiner": TINY_REFINER,
}


@pytest.fixture
def refiner_cfg() -> dict[str, Any]:
    return copy.deepcopy(TINY_REFINER)


@pytest.fixture
def test_profile() -> dict[str, Any]:
    return copy.deepcopy(TEST_PROFILE)


def synthetic_training_data(tmp: Path, clips: int, clips_per_shard: int, out: str = "clips") -> tuple[Path, Path]:
    """(profile file, clip manifest) under ``tmp``: the tests' profile written as YAML and ``clips``
    synthetic 32² training clips of 5 frames (plus one validation clip), what the training tests train on."""
    from gnvc.data.prepare import prepare_dataset

    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(TEST_PROFILE))
    prepare_dataset(
        {"out_dir": str(tmp / out), "sources": ["synthetic"], "frames": 5, "clips_per_shard": clips_per_shard,
         "train": {"size": [32, 32], "synthetic_clips": clips}, "val": {"size": [32, 32], "synthetic_clips": 1}},
        progress=False,
    )  # fmt: skip
    return profile, tmp / out / "manifest.json"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A fresh local Ray with 2 CPU slots (one per worker), on loopback only; shared by the Ray Train
    tests of this folder (test_distributed, test_fsdp), which run only in a loopback-only namespace."""
    import ray

    for attempt in range(3):  # Ray gives its raylet a fixed 30 s to register: too short on a loaded CI box
        try:
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                _temp_dir=tempfile.mkdtemp(prefix="gnvc-ray-", dir="/tmp"),
            )
            break
        except Exception as e:
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    try:
        yield
    finally:
        ray.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: starts Ray; runs only in a loopback-only network namespace")
