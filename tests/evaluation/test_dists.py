"""DISTS built offline: zero for identical images, growing with distortion, the package's α/β."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnvc.metrics.dists_metric import dists_alpha_beta_path, dists_distance, dists_model


def test_dists_identical_is_zero(natural_images):
    x = np.stack(natural_images)
    assert np.abs(dists_distance(x, x)).max() < 1e-6


def test_dists_grows_with_noise(natural_images):
    img = natural_images[0]
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, img.shape)
    levels = [3, 10, 25, 60]
    noisy = np.stack([np.clip(img + s * noise, 0, 255).round().astype(np.uint8) for s in levels])
    d = dists_distance(np.stack([img] * len(levels)), noisy)
    assert np.all(np.diff(d) > 0), d
    assert d[0] > 1e-3
    other = dists_distance(img[None], natural_images[1][None])[0]
    assert other > d[0]  # a different image is farther than a lightly noisy copy


def test_dists_uses_shipped_alpha_beta():
    model = dists_model("cpu")
    shipped = torch.load(dists_alpha_beta_path(), weights_only=True)
    assert torch.equal(model.alpha.data, shipped["alpha"]) and torch.equal(model.beta.data, shipped["beta"])
    # The package's own constructor draws α/β at random: loading must have replaced them.
    assert not torch.allclose(shipped["alpha"], torch.full_like(shipped["alpha"], 0.1), atol=0.02)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_dists_batching_does_not_change_values(natural_images, batch_size):
    a = np.stack(natural_images)
    b = np.stack([np.roll(x, 2, axis=0) for x in natural_images])
    np.testing.assert_allclose(
        dists_distance(a, b, batch_size=batch_size), dists_distance(a, b, batch_size=8), atol=1e-6
    )
