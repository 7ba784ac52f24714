"""PSNR, MS-SSIM, E_warp, CLIP-F and compute_metrics on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from gnvc.errors import GnvcError, InputError
from gnvc.io.video import Video
from gnvc.metrics import compute_metrics
from gnvc.metrics.ewarp import ewarp_pairs
from gnvc.metrics.msssim import msssim, window_size
from gnvc.metrics.psnr import PSNR_CAP_DB, psnr_rgb, psnr_y


def texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture (flow estimators need structure at several scales)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = np.stack([gaussian_filter(rng.normal(0, 1, (h, w)), 3) for _ in range(3)], -1)
    img = (img - img.min()) / (img.max() - img.min())
    return (40 + 170 * img).round().astype(np.uint8)


def test_psnr_known_values():
    ref = np.full((2, 8, 8, 3), 100, np.uint8)
    dist = ref.copy()
    dist[1] += 1  # MSE 1 → 10·log10(255²) dB
    p = psnr_rgb(ref, dist)
    assert p[0] == PSNR_CAP_DB
    assert p[1] == pytest.approx(20 * np.log10(255), abs=1e-9)
    # Grey g maps to 8-bit BT.709 luma rint(16 + 219·g/255): 100 → 102, 110 → 110.
    dist_y = ref + 10
    dy = np.rint(16 + 219 * 110 / 255) - np.rint(16 + 219 * 100 / 255)
    assert dy == 8
    assert psnr_y(ref, dist_y)[0] == pytest.approx(10 * np.log10(255**2 / dy**2), abs=1e-9)


def test_psnr_y_ignores_chroma_only_changes():
    ref = np.zeros((1, 4, 4, 3), np.uint8)
    ref[..., 0] = 200
    dist = ref.copy()
    dist[..., 0], dist[..., 1] = 200 - 30, 30 * 0.2126 / 0.7152  # trade red for green at ~equal luma
    assert psnr_y(ref, dist)[0] > psnr_rgb(ref, dist)[0] + 10


def test_msssim_window_and_values():
    assert window_size(1080, 1920) == 11 and window_size(144, 176) == 9 and window_size(64, 64) == 3
    with pytest.raises(InputError):
        window_size(32, 64)
    ref = np.stack([texture(144, 176, s) for s in range(2)])
    assert msssim(ref, ref) == pytest.approx([1.0, 1.0], abs=1e-6)
    noisy = np.clip(ref + np.random.default_rng(0).normal(0, 15, ref.shape), 0, 255).astype(np.uint8)
    assert np.all(msssim(ref, noisy) < 0.99)


def _panning(frames: int = 5, step: int = 2) -> np.ndarray:
    big = texture(120, 200, seed=3)
    return np.stack([big[10:106, 10 + step * t : 138 + step * t] for t in range(frames)])


def test_ewarp_of_flicker_on_static_scene_is_exact():
    """Static scene (zero flow, nothing occluded), output brightness alternating by 10 levels:
    E_t = (10/255)² for every pair, ×10³."""
    ref = np.stack([texture(seed=1)] * 4)
    out = ref.copy()
    out[1::2] += 10
    np.testing.assert_allclose(ewarp_pairs(ref, out), 1000 * (10 / 255) ** 2, rtol=1e-3)  # flow ≈ 0, not exactly
    assert np.all(ewarp_pairs(ref, ref) < 1e-4)


def test_ewarp_follows_motion_and_flags_flicker():
    ref = _panning()
    clean = ewarp_pairs(ref, ref)
    flicker = ref.astype(np.int16)
    flicker[1::2] += 12
    flick = ewarp_pairs(ref, np.clip(flicker, 0, 255).astype(np.uint8))
    # Motion is compensated (small residual from bilinear warping), flicker is not.
    assert clean.max() < 0.5
    assert flick.min() > 5 * clean.max() + 1.0


def test_compute_metrics_structure(carphone):
    ref = Video(carphone.frames[:3], carphone.fps)
    dist = Video(np.clip(ref.frames.astype(np.int16) + 6, 0, 255).astype(np.uint8), ref.fps)
    r = compute_metrics(ref, dist, ["psnr_rgb", "psnr_y", "msssim", "ewarp"])
    assert r["frames"] == 3 and r["width"] == 176 and r["height"] == 144
    assert set(r["per_frame"]) == {"psnr_rgb", "psnr_y", "msssim"} and set(r["per_pair"]) == {"ewarp"}
    assert all(len(v) == 3 for v in r["per_frame"].values()) and len(r["per_pair"]["ewarp"]) == 2
    assert r["mean"]["psnr_rgb"] == pytest.approx(np.mean(r["per_frame"]["psnr_rgb"]))
    assert r["info"]["msssim"]["win_size"] == 9 and r["info"]["ewarp"]["flow"] == "opencv-farneback"
    single = compute_metrics(ref.frames[:1], dist.frames[:1], ["ewarp"])
    assert single["mean"]["ewarp"] is None and single["per_pair"]["ewarp"] == []


def test_compute_metrics_rejects_bad_inputs(carphone):
    with pytest.raises(InputError, match="differ in shape"):
        compute_metrics(carphone.frames[:2], carphone.frames[:3], ["psnr_rgb"])
    with pytest.raises(InputError, match="unknown metric"):
        compute_metrics(carphone.frames[:2], carphone.frames[:2], ["psnr", "vmaf"])
    with pytest.raises(GnvcError, match="local CLIP weights"):
        compute_metrics(carphone.frames[:2], carphone.frames[:2], ["clipf"])


def test_clipf_with_local_transformers_weights(tmp_path, carphone):
    """CLIP-F through the real loading path, with a small CLIP saved in transformers' format."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(tmp_path)
    frames = carphone.frames[:4]
    r = compute_metrics(frames, frames, ["clipf"], clip_path=tmp_path)
    assert len(r["per_pair"]["clipf"]) == 3
    assert all(-1.0 <= v <= 1.0 + 1e-6 for v in r["per_pair"]["clipf"])
    static = compute_metrics(np.stack([frames[0]] * 3), np.stack([frames[0]] * 3), ["clipf"], clip_path=tmp_path)
    assert static["mean"]["clipf"] == pytest.approx(1.0, abs=1e-5)
    assert len(r["info"]["clipf"]["weights_sha256"]) == 64
    with pytest.raises(GnvcError, match="config.json"):
        compute_metrics(frames, frames, ["clipf"], clip_path=tmp_path / "missing")
